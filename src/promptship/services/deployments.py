"""What runs where: the deployment pointers, their history, and the soaks a deployment
starts or stops.

A deployment can make open promotion requests moot; :func:`deploy` returns them and the
caller closes them (:func:`promptship.services.requests.close_moot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import Move, RequestState, VersionStatus, find_transition
from promptship.errors import GateRefused
from promptship.services import checkpoints, identities, lifecycle, registry
from promptship.services.deps import Deps
from promptship.store.models import (
    Approval,
    Deployment,
    DeploymentHistory,
    PromotionRequest,
    Prompt,
    PromptVersion,
    SoakRun,
)

STAGING_SOAK = "staging-shadow"
BREAKGLASS_SOAK = "breakglass-production"


@dataclass(frozen=True)
class Deployed:
    """What :func:`deploy` changed, and what the caller still has to act on."""

    #: the version the environment ran before, if any
    previous: PromptVersion | None
    #: open requests the deployment made moot (another version took their environment, or
    #: their move is no longer possible), each with its version: to close as superseded
    moot: list[tuple[PromotionRequest, PromptVersion]]
    #: why they are moot, as their close reason
    moot_reason: str


async def active(session: AsyncSession, prompt_id: int, environment: str) -> Deployment | None:
    return (
        await session.execute(
            select(Deployment).where(
                Deployment.prompt_id == prompt_id, Deployment.environment == environment
            )
        )
    ).scalar_one_or_none()


async def live_version(
    session: AsyncSession, prompt_id: int, environment: str
) -> PromptVersion | None:
    """The version ``environment`` runs now (None: nothing deployed there)."""
    pointer = await active(session, prompt_id, environment)
    return await registry.get_version_by_id(session, pointer.version_id) if pointer else None


async def latest_soak(
    session: AsyncSession, version_id: int, environment: str, kind: str = STAGING_SOAK
) -> SoakRun | None:
    return (
        await session.execute(
            select(SoakRun)
            .where(
                SoakRun.version_id == version_id,
                SoakRun.environment == environment,
                SoakRun.kind == kind,
            )
            .order_by(SoakRun.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def deploy(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    environment: str,
    actor: Actor,
    move: Move,
    *,
    request: PromotionRequest | None = None,
    reason: str | None = None,
    by: str | None = None,
) -> Deployed:
    """Point ``environment`` at ``version`` and start the soak it needs.

    The requests it made moot are returned, not closed: closing them is
    :func:`promptship.services.requests.close_moot`'s, which the caller runs next.
    ``by`` is who the deployment file names as having made the move (default
    :func:`_caused_by`).
    """
    env_status = deps.env_status(environment)
    pointer = await active(session, prompt.id, environment)
    previous = (
        await registry.get_version_by_id(session, pointer.version_id)
        if pointer is not None
        else None
    )
    if previous is not None and previous.id == version.id:
        raise GateRefused(f"{lifecycle.label(prompt, version)} is already active in {environment}")
    if previous is not None and previous.status == env_status.value and move is not Move.ROLLBACK:
        await lifecycle.transition(
            session,
            deps,
            prompt,
            previous,
            VersionStatus.DEPRECATED,
            Move.REPLACE,
            actor,
            environment=environment,
            details={"replaced_by": version.version},
        )
        await stop_soaks(session, deps, previous, f"replaced in {environment} by {version.version}")
    if version.status != env_status.value and move is not Move.ROLLBACK:
        await lifecycle.transition(
            session,
            deps,
            prompt,
            version,
            env_status,
            move,
            actor,
            environment=environment,
            request_id=request.id if request else None,
        )
    await move_pointer(
        session,
        deps,
        prompt,
        version,
        environment,
        actor,
        move,
        pointer=pointer,
        previous=previous,
        by=by or await _caused_by(session, actor, request),
        request=request,
        reason=reason,
    )
    if environment == deps.policy.environments.production:  # anchor every production change
        await checkpoints.make(session, deps, f"{move.value} {prompt.name} {version.version}")
    await _start_staging_soak(session, deps, version, environment, move)
    return Deployed(
        previous=previous,
        moot=await _moot_requests(session, deps, prompt, version, environment, request),
        moot_reason=f"{prompt.name} {version.version} took {environment}",
    )


def named(actor: Actor) -> str:
    """How the deployment file names ``actor``: the person, and the service acting for
    them when there is one ("U04 (via ci-github)")."""
    return f"{actor.id} (via {actor.proxy})" if actor.proxy else actor.id


async def _caused_by(session: AsyncSession, actor: Actor, request: PromotionRequest | None) -> str:
    """Who caused a move: the acting person; for a move that completes a request, the
    person whose approval completed it, or else (its tests recorded by CI or a worker, an
    approver's override, its soak passing) the person who asked for it."""
    if request is None:
        return named(actor)
    if actor.is_person:
        approved = await session.scalar(
            select(Approval.id)
            .where(
                Approval.request_id == request.id,
                Approval.user_id == actor.id,
                Approval.approve.is_(True),
            )
            .limit(1)
        )
        if approved is not None:
            return named(actor)
    if request.requested_by:
        return f"{request.requester} (via {request.requested_by})"
    return request.requester


async def move_pointer(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    environment: str,
    actor: Actor,
    move: Move,
    *,
    pointer: Deployment | None,
    previous: PromptVersion | None,
    by: str,
    request: PromotionRequest | None = None,
    reason: str | None = None,
) -> None:
    """Point ``environment`` at ``version``: the pointer (its revision bumped, which wakes the
    runtime API's long-polls), its history row and the signed ``deployment.changed`` event.
    Statuses, soaks and requests are the caller's."""
    now = deps.clock.now()
    if pointer is None:
        session.add(
            Deployment(
                prompt_id=prompt.id,
                environment=environment,
                version_id=version.id,
                deployed_at=now,
                deployed_by=by,
                revision=1,
            )
        )
    else:
        pointer.version_id = version.id
        pointer.deployed_at = now
        pointer.deployed_by = by
        pointer.revision += 1
    session.add(
        DeploymentHistory(
            prompt_id=prompt.id,
            environment=environment,
            version_id=version.id,
            previous_version_id=previous.id if previous else None,
            move=move.value,
            actor=actor.id,
            reason=reason,
            request_id=request.id if request else None,
            at=now,
        )
    )
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        actor,
        action="deployment.changed",
        prompt=prompt.name,
        version=version.version,
        environment=environment,
        request_id=request.id if request else None,
        details={
            "from": previous.version if previous else None,
            "to": version.version,
            "content_hash": version.content_hash,
            "move": move.value,
            "reason": reason,
            "by": by,
        },
    )


async def _start_staging_soak(
    session: AsyncSession, deps: Deps, version: PromptVersion, environment: str, move: Move
) -> None:
    if environment == deps.policy.environments.staging and move is Move.PROMOTE:
        await start_staging_soak(session, deps, version)
    await session.flush()


async def start_staging_soak(
    session: AsyncSession, deps: Deps, version: PromptVersion
) -> SoakRun | None:
    """Start a shadow soak of ``version`` in staging with the policy's current soak
    settings; None when the policy sets no soak."""
    envs = deps.policy.environments
    length = envs.production_policy.soak
    if length <= timedelta(0):
        return None
    now = deps.clock.now()
    soak = SoakRun(
        version_id=version.id,
        environment=envs.staging,
        kind=STAGING_SOAK,
        baseline_version_id=None,
        state="running",
        started_at=now,
        ends_at=now + length,
        finished_at=None,
        cycles_done=0,
        worst_divergence=None,
        failure=None,
        details={},
    )
    session.add(soak)
    await session.flush()
    return soak


async def _moot_requests(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    environment: str,
    request: PromotionRequest | None,
) -> list[tuple[PromotionRequest, PromptVersion]]:
    """The prompt's other open requests that deploying ``version`` made moot."""
    open_requests = (
        (
            await session.execute(
                select(PromotionRequest).where(
                    PromotionRequest.prompt_id == prompt.id,
                    PromotionRequest.state == RequestState.OPEN.value,
                )
            )
        )
        .scalars()
        .all()
    )
    moot = []
    for other in open_requests:
        if request is not None and other.id == request.id:
            continue
        other_version = await registry.get_version_by_id(session, other.version_id)
        still_possible = find_transition(
            VersionStatus(other_version.status),
            deps.env_status(other.environment),
            lifecycle.target_move(other),
        )
        if (
            other.environment == environment and other.version_id != version.id
        ) or not still_possible:
            moot.append((other, other_version))
    return moot


async def start_breakglass_soak(
    session: AsyncSession, deps: Deps, version: PromptVersion, request: PromotionRequest
) -> None:
    length = deps.policy.breakglass.production_soak
    if length <= timedelta(0):
        return
    history = (
        await session.execute(
            select(DeploymentHistory)
            .where(
                DeploymentHistory.request_id == request.id,
                DeploymentHistory.environment == request.environment,
            )
            .order_by(DeploymentHistory.id.desc())
            .limit(1)
        )
    ).scalar_one()
    now = deps.clock.now()
    session.add(
        SoakRun(
            version_id=version.id,
            environment=request.environment,
            kind=BREAKGLASS_SOAK,
            baseline_version_id=history.previous_version_id,
            state="running",
            started_at=now,
            ends_at=now + length,
            finished_at=None,
            cycles_done=0,
            worst_divergence=None,
            failure=None,
            details={},
        )
    )
    await session.flush()


async def stop_soaks(session: AsyncSession, deps: Deps, version: PromptVersion, why: str) -> None:
    running = (
        (
            await session.execute(
                select(SoakRun).where(SoakRun.version_id == version.id, SoakRun.state == "running")
            )
        )
        .scalars()
        .all()
    )
    for soak in running:
        soak.state = "cancelled"
        soak.finished_at = deps.clock.now()
        soak.failure = why
    await session.flush()
