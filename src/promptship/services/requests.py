"""Promotion requests: opening, promoting, closing, expiring and re-evaluating them.

Every function here runs inside the caller's transaction and holds the prompt's row lock
(:func:`registry.lock_prompt`) before it reads what it will change, so two replicas, two
clicks or fifty retries of the same approval cannot both act on the same state.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import SYSTEM, Actor
from promptship.domain.lifecycle import (
    GateState,
    Move,
    RequestKind,
    RequestState,
    RunState,
    VersionStatus,
    find_transition,
    require_transition,
)
from promptship.errors import BadInput, Forbidden, GateRefused, NotFound, RequestClosed
from promptship.services import (
    deployments,
    gates,
    identities,
    lifecycle,
    outbox,
    parties,
    registry,
    runs,
)
from promptship.services.deps import Deps, request_code
from promptship.services.views import RequestView
from promptship.store.models import PromotionRequest, Prompt, PromptVersion

#: the gate a request can be held by and still be cleared (override or re-run)
REGRESSIONS = "regressions"


async def notify(
    session: AsyncSession, deps: Deps, topic: str, request: RequestView, **extra: object
) -> None:
    await outbox.enqueue(
        session,
        deps.clock,
        topic,
        {"request": request.model_dump(mode="json"), **extra},
        channel=deps.policy.channel,
        thread_key=request.code,
    )


async def close(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    state: RequestState,
    actor: Actor,
    reason: str | None,
) -> RequestView:
    request.state = state.value
    request.closed_at = deps.clock.now()
    request.closed_by = actor.id
    request.close_reason = reason
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        actor,
        action=f"request.{state.value}",
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={"reason": reason} if reason else {},
    )
    result = await gates.view(session, deps, request, prompt, version)
    await notify(session, deps, f"request.{state.value}", result)
    return result


async def close_moot(
    session: AsyncSession, deps: Deps, prompt: Prompt, deployed: deployments.Deployed, actor: Actor
) -> None:
    """Close, as superseded, the open requests a deployment made moot."""
    for request, version in deployed.moot:
        await close(
            session,
            deps,
            prompt,
            version,
            request,
            RequestState.SUPERSEDED,
            actor,
            deployed.moot_reason,
        )


async def advance(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    actor: Actor,
) -> bool:
    """Promote the moment the last gate passes. Returns True when it promoted."""
    checks = await gates.check_request(session, deps, prompt, version, request)
    if (
        not checks
        and find_transition(
            VersionStatus(version.status),
            deps.env_status(request.environment),
            lifecycle.target_move(request),
        )
        is None
    ):
        return False
    if any(c.state != GateState.PASSED.value for c in checks):
        return False
    deployed = await deployments.deploy(
        session,
        deps,
        prompt,
        version,
        request.environment,
        actor,
        lifecycle.target_move(request),
        request=request,
        reason=request.reason,
    )
    await close_moot(session, deps, prompt, deployed, actor)
    if request.kind == RequestKind.BREAKGLASS:
        await deployments.start_breakglass_soak(session, deps, version, request)
    request.state = RequestState.PROMOTED.value
    request.closed_at = deps.clock.now()
    request.closed_by = actor.id
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        actor,
        action="request.promoted",
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={
            "approvers": [
                d.user_id for d in await gates.decisions_on(session, request.id) if d.approve
            ]
        },
    )
    await notify(
        session, deps, "request.promoted", await gates.view(session, deps, request, prompt, version)
    )
    return True


async def request_promotion(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str,
    environment: str,
    actor: Actor,
    reason: str | None = None,
    kind: RequestKind = RequestKind.NORMAL,
    queue_tests: bool = False,
) -> RequestView:
    """Open (or reuse) a promotion request; it promotes the moment its last gate passes.

    With ``queue_tests``, a version whose content has no passing or active run gets a
    queued validation run, and the request waits for it.
    """
    envs = deps.policy.environments
    envs.check(environment)
    if environment == envs.dev:
        raise BadInput(
            f"{envs.dev} takes no requests: it moves to any version at once",
            hint=f"promote {name} {version_name} {envs.dev}",
        )
    if kind is RequestKind.BREAKGLASS:
        if environment != envs.production:
            raise BadInput(f"break-glass promotes to {envs.production} only")
        if not (reason and reason.strip()):
            raise BadInput(
                "break-glass needs a written reason",
                hint="e.g. breakglass customer-support 2.2.1 'refund answers leak PII'",
            )
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    target = deps.env_status(environment)
    move = Move.BREAKGLASS if kind is RequestKind.BREAKGLASS else Move.PROMOTE
    if queue_tests and (target is VersionStatus.STAGING or kind is RequestKind.BREAKGLASS):
        await _queue_tests_if_needed(session, deps, prompt, version, actor)
    require_transition(
        lifecycle.label(prompt, version), VersionStatus(version.status), target, move, environment
    )

    existing = (
        await session.execute(
            select(PromotionRequest).where(
                PromotionRequest.version_id == version.id,
                PromotionRequest.environment == environment,
                PromotionRequest.kind == kind.value,
                PromotionRequest.state == RequestState.OPEN.value,
            )
        )
    ).scalar_one_or_none()
    if existing is not None and deps.clock.now() >= existing.expires_at:
        # the sweeper had not closed it yet: asking again opens a request that takes decisions
        await expire(session, deps, prompt, version, existing)
        existing = None
    if existing is not None:
        return await gates.view(session, deps, existing, prompt, version)

    now = deps.clock.now()
    if kind is RequestKind.BREAKGLASS:
        required = deps.policy.breakglass.approvals
    elif environment == envs.production:
        required = envs.production_policy.approvals
    else:
        required = 0
    request = PromotionRequest(
        prompt_id=prompt.id,
        version_id=version.id,
        content_hash=version.content_hash,
        environment=environment,
        kind=kind.value,
        state=RequestState.OPEN.value,
        requester=identities.person_of(deps.policy, actor.id),
        requested_by=actor.proxy,
        reason=reason.strip() if reason and reason.strip() else None,
        required_approvals=required,
        created_at=now,
        expires_at=now + deps.policy.approval_expiry,
        closed_at=None,
        closed_by=None,
        close_reason=None,
    )
    session.add(request)
    await session.flush()
    # signed before the gates run: they read the request's terms from this event
    await identities.record(
        session,
        deps.clock,
        actor,
        action="request.created",
        prompt=prompt.name,
        version=version.version,
        environment=environment,
        request_id=request.id,
        details={
            "kind": kind.value,
            "required_approvals": required,
            "requester": request.requester,
            "reason": request.reason,
            "expires_at": request.expires_at.isoformat(),
        },
    )
    checks = await gates.check_request(session, deps, prompt, version, request, [])
    failed = [c for c in checks if c.state == GateState.FAILED.value]
    if failed:
        first = failed[0]
        message = first.detail
        if first.gate == "tests" and "has no test run" in message:
            message = f"{lifecycle.label(prompt, version)} is {version.status}: run its tests before {environment}"
        raise GateRefused(
            message, hint="; ".join(f"{c.gate}: {c.detail}" for c in failed[1:]) or None
        )
    created = await gates.view(session, deps, request, prompt, version)
    # the approvers are pinged once, as the request opens; its updates mention nobody
    mention = list(deps.policy.roles.approvers) if required else []
    await notify(session, deps, "request.created", created, mention=mention)
    if await advance(session, deps, prompt, version, request, actor):
        return await gates.view(session, deps, request, prompt, version)
    return created


async def _queue_tests_if_needed(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    actor: Actor,
) -> None:
    latest = await registry.latest_run(session, version)
    if latest is not None and latest.state in (
        RunState.QUEUED.value,
        RunState.RUNNING.value,
        RunState.PASSED.value,
    ):
        return  # reuse it
    await runs.start_run(
        session,
        deps,
        prompt.name,
        version.version,
        actor,
        queued=True,
    )
    await session.refresh(version)


async def load_request(
    session: AsyncSession, request_id: int
) -> tuple[Prompt, PromptVersion, PromotionRequest]:
    """The request with its prompt, row-locked, and version; NotFound when there is none."""
    request = (
        await session.execute(select(PromotionRequest).where(PromotionRequest.id == request_id))
    ).scalar_one_or_none()
    if request is None:
        raise NotFound(
            f"no promotion request {request_code(request_id)}", hint="see promptship status"
        )
    prompt = await registry.lock_prompt(session, request.prompt_id)
    request = (
        await session.execute(
            select(PromotionRequest)
            .where(PromotionRequest.id == request_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    version = await registry.get_version_by_id(session, request.version_id)
    return prompt, version, request


async def expire(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
) -> RequestView:
    """Close a request past its expiry: it fails closed, by the system."""
    return await close(
        session,
        deps,
        prompt,
        version,
        request,
        RequestState.EXPIRED,
        SYSTEM,
        "no decision before it expired",
    )


async def ensure_open(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
) -> None:
    """Raise RequestClosed unless the request still takes decisions; one past its expiry is
    closed as expired first."""
    code = request_code(request.id)
    if request.state != RequestState.OPEN.value:
        by = f" by {request.closed_by}" if request.closed_by else ""
        why = f": {request.close_reason}" if request.close_reason else ""
        raise RequestClosed(f"{code} is {request.state}{by}{why}; it takes no more decisions")
    closed = await gates.signed_close(session, request.id)
    if closed is not None:  # the row was reopened behind the audit log's back
        reason = closed.details.get("reason")
        why = f": {reason}" if isinstance(reason, str) and reason else ""
        raise RequestClosed(
            f"{code} is {closed.action.removeprefix('request.')} by {closed.actor}{why}; "
            "it takes no more decisions",
            hint="its record was reopened in the database directly; see promptship audit verify",
        )
    if deps.clock.now() >= request.expires_at:
        await expire(session, deps, prompt, version, request)
        raise RequestClosed(
            f"{code} expired at {request.expires_at:%Y-%m-%d %H:%M} UTC",
            hint=f"request the promotion again: promote {prompt.name} {version.version} {request.environment}",
        )


async def cancel(
    session: AsyncSession, deps: Deps, request_id: int, actor: Actor, roles: frozenset[str]
) -> RequestView:
    """Cancel an open request: its requester withdraws it, or an approver closes someone
    else's, which is a decision (an authenticated person, never a service or the local CLI
    unless ``local_decisions``)."""
    prompt, version, request = await load_request(session, request_id)
    await ensure_open(session, deps, prompt, version, request)
    requester, _ = await parties.signed_requester(session, request)
    if identities.person_of(deps.policy, actor.id) != identities.person_of(deps.policy, requester):
        if "approvers" not in roles:
            raise Forbidden(
                f"only the requester or an approver can cancel {request_code(request.id)}"
            )
        identities.check_decider(deps.policy, actor, "cancel someone else's request")
    return await close(session, deps, prompt, version, request, RequestState.CANCELLED, actor, None)


async def expire_stale(session: AsyncSession, deps: Deps, limit: int = 500) -> list[RequestView]:
    now = deps.clock.now()
    ids = (
        (
            await session.execute(
                select(PromotionRequest.id)
                .where(
                    PromotionRequest.state == RequestState.OPEN.value,
                    PromotionRequest.expires_at <= now,
                )
                .order_by(PromotionRequest.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    expired = []
    for request_id in ids:
        prompt, version, request = await load_request(session, request_id)
        if request.state == RequestState.OPEN.value:  # another replica may have been first
            expired.append(await expire(session, deps, prompt, version, request))
    return expired


async def reevaluate(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    actor: Actor,
    failure: str | None = None,
) -> list[PromotionRequest]:
    """After a run or soak finished: promote any open request of the version now clear, close
    as failed one whose gate failed (with ``failure`` as the reason when given), and tell
    the rest their gates changed."""
    open_requests = await parties.open_requests(session, version)
    promoted = []
    for request in open_requests:
        if request.state != RequestState.OPEN.value:
            continue  # closed as superseded by an earlier promotion in this loop
        if deps.clock.now() >= request.expires_at:
            await expire(session, deps, prompt, version, request)
            continue
        if await advance(session, deps, prompt, version, request, actor):
            promoted.append(request)
            continue
        checks = await gates.check_request(session, deps, prompt, version, request)
        failed = [c for c in checks if c.state == GateState.FAILED.value]
        # held by regressions alone, it stays open: an approver may accept them with a
        # reason, or the tests may run again (a flaky case passes)
        if failed and any(c.gate != REGRESSIONS for c in failed):
            why = failure or "; ".join(f"{c.gate}: {c.detail}" for c in failed)
            await close(session, deps, prompt, version, request, RequestState.FAILED, actor, why)
        else:
            await notify(
                session,
                deps,
                "request.updated",
                await gates.view(session, deps, request, prompt, version),
            )
    return promoted
