"""Rolling an environment back to an earlier version, and archiving retired versions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor, Via
from promptship.domain.lifecycle import Move, VersionStatus, require_transition
from promptship.domain.promptfile import semver_key
from promptship.errors import BadInput, Forbidden, GateRefused
from promptship.services import deployments, identities, lifecycle, outbox, registry, requests
from promptship.services.deps import Deps
from promptship.services.roles import ROLLBACK_ROLES
from promptship.services.views import RollbackResult
from promptship.store.models import Deployment, DeploymentHistory, PromptVersion

#: what to do instead of "rolling back" to a version that is no rollback target
ROLL_FORWARD = (
    "a rollback only returns to an older version that was not rolled back itself; to move "
    "forward, promote (its gates, approvals and soak run) or push a fixed version"
)


def target_refusal(
    environment: str,
    current: PromptVersion,
    target: PromptVersion,
    *,
    breakglass_replaced: bool = False,
) -> str | None:
    """Why ``target`` (which ran in ``environment`` before) is no rollback target from
    ``current``, or None. A rollback skips every gate, so it only ever goes back: to an
    older version, never one that was itself rolled back (by a person, or automatically
    after a failed break-glass soak) nor an archived one. The version a break-glass of
    ``current`` replaced (``breakglass_replaced``) is always a target, whatever it is
    numbered: going back to it undoes the emergency."""
    if target.status == VersionStatus.ARCHIVED.value:
        return f"{target.version} is archived"
    if breakglass_replaced:
        return None
    if target.status == VersionStatus.REVERTED.value:
        return f"{target.version} was rolled back, so it is no rollback target"
    if semver_key(target.version) >= semver_key(current.version):
        return (
            f"{target.version} is not older than {current.version} (running in {environment}), "
            "so it is no rollback target"
        )
    return None


def breakglass_replaced(history: Sequence[DeploymentHistory], current: PromptVersion) -> int | None:
    """The id of the version a break-glass replaced, when ``current`` is live through that
    break-glass (``history``: the environment's moves, newest first); else None."""
    latest = next((h for h in history if h.version_id == current.id), None)
    if latest is None or latest.move != Move.BREAKGLASS.value:
        return None
    return latest.previous_version_id


async def breakglass_replaced_in(
    session: AsyncSession, prompt_id: int, environment: str, current: PromptVersion
) -> int | None:
    """:func:`breakglass_replaced`, reading the environment's newest move of ``current``."""
    latest = await session.scalar(
        select(DeploymentHistory)
        .where(
            DeploymentHistory.prompt_id == prompt_id,
            DeploymentHistory.environment == environment,
            DeploymentHistory.version_id == current.id,
        )
        .order_by(DeploymentHistory.id.desc())
        .limit(1)
    )
    return breakglass_replaced([latest] if latest is not None else [], current)


async def rollback(
    session: AsyncSession,
    deps: Deps,
    name: str,
    environment: str,
    actor: Actor,
    roles: frozenset[str],
    to_version: str | None = None,
    reason: str | None = None,
) -> RollbackResult:
    envs = deps.policy.environments
    envs.check(environment)
    if environment == envs.dev:
        raise BadInput(
            f"{envs.dev} has no gates to roll back through: point it at any version at once",
            hint=f"promote {name} VERSION {envs.dev}",
        )
    if environment == envs.production:  # rolling production back is a decision
        identities.check_decider(deps.policy, actor, f"roll back {environment}")
    if not roles & ROLLBACK_ROLES:
        raise Forbidden(
            f"only on-call or approvers can roll back {environment}",
            hint="roles.oncall and roles.approvers in the policy file list them",
        )
    prompt = await registry.get_prompt(session, name)
    prompt = await registry.lock_prompt(session, prompt.id)
    pointer = await deployments.active(session, prompt.id, environment)
    if pointer is None:
        raise GateRefused(f"{name} has nothing in {environment} to roll back")
    current = await registry.get_version_by_id(session, pointer.version_id)
    history = (
        (
            await session.execute(
                select(DeploymentHistory)
                .where(
                    DeploymentHistory.prompt_id == prompt.id,
                    DeploymentHistory.environment == environment,
                )
                .order_by(DeploymentHistory.id.desc())
            )
        )
        .scalars()
        .all()
    )
    replaced = breakglass_replaced(history, current)
    if to_version is not None:
        _, target = await registry.get_version(session, name, to_version)
        if target.id == current.id:
            raise GateRefused(f"{name} {to_version} is already active in {environment}")
        if not any(h.version_id == target.id for h in history):
            raise GateRefused(
                f"{name} {to_version} never ran in {environment}, so it is no rollback target",
                hint=f"promote it to {environment} instead",
            )
        refusal = target_refusal(
            environment, current, target, breakglass_replaced=target.id == replaced
        )
        if refusal is not None:
            raise GateRefused(f"{name} {refusal}", hint=ROLL_FORWARD)
    else:
        found: PromptVersion | None = None
        for entry in history:
            if entry.version_id == current.id:
                continue
            candidate = await registry.get_version_by_id(session, entry.version_id)
            refused = target_refusal(
                environment, current, candidate, breakglass_replaced=candidate.id == replaced
            )
            if refused is None:
                found = candidate
                break
        if found is None:
            raise GateRefused(
                f"{name} has no earlier version in {environment} to roll back to",
                hint=f"name one: rollback {name} {environment} <version>",
            )
        target = found
    env_status = deps.env_status(environment)
    if current.status == env_status.value:
        await lifecycle.transition(
            session,
            deps,
            prompt,
            current,
            VersionStatus.REVERTED,
            Move.ROLLBACK,
            actor,
            environment=environment,
            details={"reason": reason},
        )
    # A version's status is the furthest it is live: a version back in staging that is
    # still production stays production; one that was replaced or reverted, or that only
    # ran in staging since, takes the environment's status.
    if target.status != env_status.value and not (
        target.status == VersionStatus.PRODUCTION.value and env_status is VersionStatus.STAGING
    ):
        await lifecycle.transition(
            session, deps, prompt, target, env_status, Move.RESTORE, actor, environment=environment
        )
    # promptship reverts by its own rules (a failed break-glass soak): the file says so
    by = f"promptship (auto-revert of {current.version})" if actor.via is Via.SYSTEM else None
    deployed = await deployments.deploy(
        session, deps, prompt, target, environment, actor, Move.ROLLBACK, reason=reason, by=by
    )
    await requests.close_moot(session, deps, prompt, deployed, actor)
    await deployments.stop_soaks(session, deps, current, f"rolled back by {actor.id}")
    result = RollbackResult(
        prompt=name,
        environment=environment,
        from_version=current.version,
        to_version=target.version,
        actor=actor.id,
        reason=reason,
        at=deps.clock.now(),
        via=actor.via.value,
    )
    await outbox.enqueue(
        session,
        deps.clock,
        "deployment.rolled_back",
        {"rollback": result.model_dump(mode="json")},
        channel=deps.policy.channel,
        thread_key=f"{name}/{environment}",
    )
    return result


async def archive(
    session: AsyncSession, deps: Deps, name: str, version_name: str, actor: Actor
) -> str:
    """Retire a replaced or reverted version for good; it can no longer be rolled back to."""
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    require_transition(
        lifecycle.label(prompt, version),
        VersionStatus(version.status),
        VersionStatus.ARCHIVED,
        Move.ARCHIVE,
    )
    live = (
        await session.scalars(
            select(Deployment.environment).where(
                Deployment.prompt_id == prompt.id, Deployment.version_id == version.id
            )
        )
    ).all()
    if live:
        raise GateRefused(
            f"{lifecycle.label(prompt, version)} is still live in {', '.join(sorted(live))}",
            hint="promote or roll back another version there first",
        )
    await lifecycle.transition(
        session, deps, prompt, version, VersionStatus.ARCHIVED, Move.ARCHIVE, actor
    )
    return version.status
