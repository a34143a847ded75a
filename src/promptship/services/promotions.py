"""Promotion requests, decisions, deployments and rollbacks.

Every function here runs inside the caller's transaction and holds the prompt's row lock
(:func:`registry.lock_prompt`) before it reads what it will change, so two replicas, two
clicks or fifty retries of the same approval cannot both act on the same state.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import (
    Decision,
    GateFacts,
    GateState,
    Move,
    RequestKind,
    RequestState,
    RunState,
    RunSummary,
    SoakSummary,
    VersionStatus,
    evaluate,
    find_transition,
    require_transition,
)
from promptship.errors import BadInput, Conflict, Forbidden, GateRefused, NotFound, RequestClosed
from promptship.services import audit, outbox, registry
from promptship.services.deps import Deps, request_code
from promptship.services.views import (
    CheckView,
    DecisionOutcome,
    DecisionView,
    RequestView,
    RollbackResult,
)
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


def label(prompt: Prompt, version: PromptVersion) -> str:
    return f"{prompt.name} {version.version}"


# -- reading what gates need -------------------------------------------------------------


async def _run_summary(session: AsyncSession, version: PromptVersion) -> RunSummary | None:
    run = await registry.latest_run(session, version)
    if run is None:
        return None
    return RunSummary(
        run_id=run.id,
        state=RunState(run.state),
        pass_rate=run.pass_rate,
        total=run.total,
        passed=run.passed,
        failed=run.failed,
        errored=run.errored,
        regressions=tuple(run.regressions),
        regression_override=run.regression_override,
        error=run.error,
    )


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


async def _decisions(session: AsyncSession, request_id: int) -> list[Approval]:
    return list(
        (
            await session.execute(
                select(Approval).where(Approval.request_id == request_id).order_by(Approval.id)
            )
        )
        .scalars()
        .all()
    )


def _target_move(request: PromotionRequest) -> Move:
    return Move.BREAKGLASS if request.kind == RequestKind.BREAKGLASS else Move.PROMOTE


async def gate_facts(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    decisions: list[Approval],
) -> GateFacts:
    policy = deps.policy
    envs = policy.environments
    soak = None
    if request.environment == envs.production and request.kind == RequestKind.NORMAL:
        row = await latest_soak(session, version.id, envs.staging)
        if row is not None:
            soak = SoakSummary(
                soak_id=row.id,
                state=row.state,
                started_at=row.started_at,
                ends_at=row.ends_at,
                cycles_done=row.cycles_done,
                worst_divergence=row.worst_divergence,
                failure=row.failure,
            )
    return GateFacts(
        label=label(prompt, version),
        status=VersionStatus(version.status),
        target=request.environment,
        now=deps.clock.now(),
        min_pass_rate=envs.staging_policy.min_pass_rate,
        regression_check=envs.staging_policy.regression_check,
        run=await _run_summary(session, version),
        required_approvals=request.required_approvals,
        decisions=tuple(
            Decision(user=d.user_id, approve=d.approve, roles=frozenset(d.roles)) for d in decisions
        ),
        soak_required=(
            envs.production_policy.soak
            if request.kind == RequestKind.NORMAL and request.environment == envs.production
            else timedelta(0)
        ),
        soak=soak,
        stakeholders_configured=bool(policy.roles.stakeholders)
        and request.environment == envs.production
        and request.kind == RequestKind.NORMAL,
        reason=request.reason,
    )


async def check_request(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    decisions: list[Approval] | None = None,
) -> list[CheckView]:
    if decisions is None:
        decisions = await _decisions(session, request.id)
    transition = find_transition(
        VersionStatus(version.status), deps.env_status(request.environment), _target_move(request)
    )
    if transition is None:
        return []
    facts = await gate_facts(session, deps, prompt, version, request, decisions)
    return [
        CheckView(gate=c.gate, state=c.state.value, detail=c.detail)
        for c in evaluate(transition, facts)
    ]


async def view(
    session: AsyncSession,
    deps: Deps,
    request: PromotionRequest,
    prompt: Prompt | None = None,
    version: PromptVersion | None = None,
) -> RequestView:
    prompt = (
        prompt
        or (
            await session.execute(select(Prompt).where(Prompt.id == request.prompt_id))
        ).scalar_one()
    )
    version = version or await registry.get_version_by_id(session, request.version_id)
    decisions = await _decisions(session, request.id)
    checks = (
        await check_request(session, deps, prompt, version, request, decisions)
        if request.state == RequestState.OPEN
        else []
    )
    return RequestView(
        id=request.id,
        code=request_code(request.id),
        prompt=prompt.name,
        version=version.version,
        content_hash=request.content_hash,
        environment=request.environment,
        kind=request.kind,
        state=request.state,
        requester=request.requester,
        author=version.author,
        reason=request.reason,
        required_approvals=request.required_approvals,
        decisions=[
            DecisionView(
                user=d.user_id,
                approve=d.approve,
                comment=d.comment,
                roles=sorted(d.roles),
                at=d.created_at,
            )
            for d in decisions
        ],
        checks=checks,
        created_at=request.created_at,
        expires_at=request.expires_at,
        closed_at=request.closed_at,
        closed_by=request.closed_by,
        close_reason=request.close_reason,
    )


# -- status transitions ------------------------------------------------------------------


async def transition(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    target: VersionStatus,
    move: Move,
    actor: str,
    *,
    environment: str | None = None,
    request_id: int | None = None,
    details: dict[str, object] | None = None,
) -> None:
    """Move a version's status along the lifecycle table, with its audit event."""
    source = VersionStatus(version.status)
    require_transition(label(prompt, version), source, target, move, environment)
    version.status = target.value
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action="version.status",
        prompt=prompt.name,
        version=version.version,
        environment=environment,
        request_id=request_id,
        details={"from": source.value, "to": target.value, "move": move.value, **(details or {})},
    )


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


async def active(session: AsyncSession, prompt_id: int, environment: str) -> Deployment | None:
    return (
        await session.execute(
            select(Deployment).where(
                Deployment.prompt_id == prompt_id, Deployment.environment == environment
            )
        )
    ).scalar_one_or_none()


async def deploy(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    environment: str,
    actor: str,
    move: Move,
    *,
    request: PromotionRequest | None = None,
    reason: str | None = None,
) -> PromptVersion | None:
    """Point ``environment`` at ``version``; returns the version it replaced, if any."""
    now = deps.clock.now()
    env_status = deps.env_status(environment)
    pointer = await active(session, prompt.id, environment)
    previous = (
        await registry.get_version_by_id(session, pointer.version_id)
        if pointer is not None
        else None
    )
    if previous is not None and previous.id == version.id:
        raise GateRefused(f"{label(prompt, version)} is already active in {environment}")
    if previous is not None and previous.status == env_status.value and move is not Move.ROLLBACK:
        await transition(
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
        await _stop_soaks(
            session, deps, previous, f"replaced in {environment} by {version.version}"
        )
    if version.status != env_status.value and move is not Move.ROLLBACK:
        await transition(
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
    if pointer is None:
        session.add(
            Deployment(
                prompt_id=prompt.id,
                environment=environment,
                version_id=version.id,
                deployed_at=now,
                deployed_by=actor,
                revision=1,
            )
        )
    else:
        pointer.version_id = version.id
        pointer.deployed_at = now
        pointer.deployed_by = actor
        pointer.revision += 1
    session.add(
        DeploymentHistory(
            prompt_id=prompt.id,
            environment=environment,
            version_id=version.id,
            previous_version_id=previous.id if previous else None,
            move=move.value,
            actor=actor,
            reason=reason,
            request_id=request.id if request else None,
            at=now,
        )
    )
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action="deployment.changed",
        prompt=prompt.name,
        version=version.version,
        environment=environment,
        request_id=request.id if request else None,
        details={
            "from": previous.version if previous else None,
            "to": version.version,
            "move": move.value,
            "reason": reason,
        },
    )
    await _after_deploy(session, deps, prompt, version, environment, move, actor, request)
    return previous


async def _after_deploy(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    environment: str,
    move: Move,
    actor: str,
    request: PromotionRequest | None,
) -> None:
    """Start the soak a new deployment needs and close requests it made moot."""
    envs = deps.policy.environments
    now = deps.clock.now()
    if environment == envs.staging and move is Move.PROMOTE:
        soak = envs.production_policy.soak
        if soak > timedelta(0):
            session.add(
                SoakRun(
                    version_id=version.id,
                    environment=envs.staging,
                    kind=STAGING_SOAK,
                    baseline_version_id=None,
                    state="running",
                    started_at=now,
                    ends_at=now + soak,
                    finished_at=None,
                    cycles_done=0,
                    worst_divergence=None,
                    failure=None,
                    details={},
                )
            )
    await session.flush()
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
    for other in open_requests:
        if request is not None and other.id == request.id:
            continue
        other_version = await registry.get_version_by_id(session, other.version_id)
        still_possible = find_transition(
            VersionStatus(other_version.status),
            deps.env_status(other.environment),
            _target_move(other),
        )
        if (
            other.environment == environment and other.version_id != version.id
        ) or not still_possible:
            await close(
                session,
                deps,
                prompt,
                other_version,
                other,
                RequestState.SUPERSEDED,
                actor,
                f"{prompt.name} {version.version} took {environment}",
            )


async def close(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    state: RequestState,
    actor: str,
    reason: str | None,
) -> RequestView:
    request.state = state.value
    request.closed_at = deps.clock.now()
    request.closed_by = actor
    request.close_reason = reason
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action=f"request.{state.value}",
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={"reason": reason} if reason else {},
    )
    result = await view(session, deps, request, prompt, version)
    await notify(session, deps, f"request.{state.value}", result)
    return result


async def advance(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    actor: str,
) -> bool:
    """Promote the moment the last gate passes. Returns True when it promoted."""
    checks = await check_request(session, deps, prompt, version, request)
    if (
        not checks
        and find_transition(
            VersionStatus(version.status),
            deps.env_status(request.environment),
            _target_move(request),
        )
        is None
    ):
        return False
    if any(c.state != GateState.PASSED.value for c in checks):
        return False
    await deploy(
        session,
        deps,
        prompt,
        version,
        request.environment,
        actor,
        _target_move(request),
        request=request,
        reason=request.reason,
    )
    if request.kind == RequestKind.BREAKGLASS:
        await _start_breakglass_soak(session, deps, version, request)
    request.state = RequestState.PROMOTED.value
    request.closed_at = deps.clock.now()
    request.closed_by = actor
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action="request.promoted",
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={
            "approvers": [d.user_id for d in await _decisions(session, request.id) if d.approve]
        },
    )
    await notify(
        session, deps, "request.promoted", await view(session, deps, request, prompt, version)
    )
    return True


async def _start_breakglass_soak(
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


# -- use cases -----------------------------------------------------------------------------


async def request_promotion(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str,
    environment: str,
    requester: str,
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
            f"{envs.dev} runs every registered version; there is nothing to promote to",
            hint=f"promote to {envs.staging} or {envs.production}",
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
        await _queue_tests_if_needed(session, deps, prompt, version, requester)
    require_transition(
        label(prompt, version), VersionStatus(version.status), target, move, environment
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
    if existing is not None:
        return await view(session, deps, existing, prompt, version)

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
        requester=requester,
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
    checks = await check_request(session, deps, prompt, version, request, [])
    failed = [c for c in checks if c.state == GateState.FAILED.value]
    if failed:
        first = failed[0]
        message = first.detail
        if first.gate == "tests" and "has no test run" in message:
            message = (
                f"{label(prompt, version)} is {version.status}: run its tests before {environment}"
            )
        raise GateRefused(
            message, hint="; ".join(f"{c.gate}: {c.detail}" for c in failed[1:]) or None
        )
    await audit.record(
        session,
        deps.clock,
        actor=requester,
        action="request.created",
        prompt=prompt.name,
        version=version.version,
        environment=environment,
        request_id=request.id,
        details={"kind": kind.value, "required_approvals": required, "reason": request.reason},
    )
    created = await view(session, deps, request, prompt, version)
    await notify(session, deps, "request.created", created)
    if await advance(session, deps, prompt, version, request, requester):
        return await view(session, deps, request, prompt, version)
    return created


async def _queue_tests_if_needed(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    requester: str,
) -> None:
    from promptship.services import runs  # runs builds on this module

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
        requester,
        len(version.content.get("tests", [])),
        queued=True,
    )
    await session.refresh(version)


async def _load_request(
    session: AsyncSession, request_id: int
) -> tuple[Prompt, PromptVersion, PromotionRequest]:
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


async def _ensure_open(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
) -> None:
    code = request_code(request.id)
    if request.state != RequestState.OPEN.value:
        by = f" by {request.closed_by}" if request.closed_by else ""
        why = f": {request.close_reason}" if request.close_reason else ""
        raise RequestClosed(f"{code} is {request.state}{by}{why}; it takes no more decisions")
    if deps.clock.now() >= request.expires_at:
        await close(
            session,
            deps,
            prompt,
            version,
            request,
            RequestState.EXPIRED,
            audit.SYSTEM_ACTOR,
            "no decision before it expired",
        )
        raise RequestClosed(
            f"{code} expired at {request.expires_at:%Y-%m-%d %H:%M} UTC",
            hint=f"request the promotion again: promote {prompt.name} {version.version} {request.environment}",
        )


async def record_decision(
    session: AsyncSession,
    deps: Deps,
    request_id: int,
    user: str,
    roles: frozenset[str],
    approve: bool,
    comment: str | None = None,
    content_hash: str | None = None,
) -> DecisionOutcome:
    prompt, version, request = await _load_request(session, request_id)
    code = request_code(request.id)
    if content_hash is not None and not request.content_hash.startswith(content_hash or "-"):
        raise Conflict(
            f"{code} is for other content than the message you clicked showed",
            hint=f"see /prompt show {prompt.name} {version.version}",
        )
    await _ensure_open(session, deps, prompt, version, request)
    if user == request.requester:
        if approve:
            raise Forbidden(f"you requested {code}; someone else must approve it")
        raise Forbidden(
            f"you requested {code}; cancel it instead of rejecting it", hint=f"cancel {code}"
        )
    if approve and user == version.author:
        raise Forbidden(f"you wrote {label(prompt, version)}; someone else must approve it")
    deciding_roles = roles & {"approvers", "stakeholders"}
    if not deciding_roles:
        raise Forbidden(
            f"only approvers can {'approve' if approve else 'reject'} {code}",
            hint="roles.approvers in the policy file lists them",
        )
    if request.content_hash != version.content_hash:  # pragma: no cover - versions are immutable
        raise Conflict(f"{code} was made for other content of {label(prompt, version)}")
    previous = (
        await session.execute(
            select(Approval).where(Approval.request_id == request.id, Approval.user_id == user)
        )
    ).scalar_one_or_none()
    if previous is not None:
        if previous.approve == approve:
            verb = "approved" if approve else "rejected"
            return DecisionOutcome(
                request=await view(session, deps, request, prompt, version),
                recorded=False,
                message=f"you already {verb} {code}; it counts once",
            )
        raise Conflict(
            f"you already {'approved' if previous.approve else 'rejected'} {code}; "
            "a decision cannot be changed"
        )
    if not approve and not (comment and comment.strip()):
        raise BadInput("a rejection needs a reason", hint=f"reject {code} <reason>")
    try:
        async with session.begin_nested():
            session.add(
                Approval(
                    request_id=request.id,
                    user_id=user,
                    approve=approve,
                    comment=comment.strip() if comment and comment.strip() else None,
                    content_hash=version.content_hash,
                    roles=sorted(deciding_roles),
                    created_at=deps.clock.now(),
                )
            )
    except IntegrityError:  # pragma: no cover - the prompt lock makes this unreachable
        return DecisionOutcome(
            request=await view(session, deps, request, prompt, version),
            recorded=False,
            message=f"you already decided on {code}",
        )
    await audit.record(
        session,
        deps.clock,
        actor=user,
        action="request.approved" if approve else "request.rejection",
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={
            "comment": comment,
            "roles": sorted(deciding_roles),
            "content_hash": version.content_hash,
        },
    )
    if not approve:
        closed = await close(
            session, deps, prompt, version, request, RequestState.REJECTED, user, comment
        )
        return DecisionOutcome(request=closed, recorded=True, message=f"you rejected {code}")
    if await advance(session, deps, prompt, version, request, user):
        result = await view(session, deps, request, prompt, version)
        return DecisionOutcome(
            request=result,
            recorded=True,
            message=f"you approved {code}: {label(prompt, version)} is now in {request.environment}",
        )
    result = await view(session, deps, request, prompt, version)
    await notify(session, deps, "request.updated", result)
    have = sum(1 for d in result.decisions if d.approve and "approvers" in d.roles)
    return DecisionOutcome(
        request=result,
        recorded=True,
        message=f"you approved {code} ({min(have, request.required_approvals)}/{request.required_approvals} approvals)",
    )


async def cancel(
    session: AsyncSession, deps: Deps, request_id: int, user: str, roles: frozenset[str]
) -> RequestView:
    prompt, version, request = await _load_request(session, request_id)
    await _ensure_open(session, deps, prompt, version, request)
    if user != request.requester and "approvers" not in roles:
        raise Forbidden(f"only the requester or an approver can cancel {request_code(request.id)}")
    return await close(session, deps, prompt, version, request, RequestState.CANCELLED, user, None)


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
        prompt, version, request = await _load_request(session, request_id)
        if request.state == RequestState.OPEN.value:  # another replica may have been first
            expired.append(
                await close(
                    session,
                    deps,
                    prompt,
                    version,
                    request,
                    RequestState.EXPIRED,
                    audit.SYSTEM_ACTOR,
                    "no decision before it expired",
                )
            )
    return expired


async def reevaluate(
    session: AsyncSession, deps: Deps, prompt: Prompt, version: PromptVersion, actor: str
) -> list[PromotionRequest]:
    """After a run or soak finished: promote any open request of the version now clear."""
    open_requests = (
        (
            await session.execute(
                select(PromotionRequest)
                .where(
                    PromotionRequest.version_id == version.id,
                    PromotionRequest.state == RequestState.OPEN.value,
                )
                .order_by(PromotionRequest.id)
            )
        )
        .scalars()
        .all()
    )
    promoted = []
    for request in open_requests:
        if request.state != RequestState.OPEN.value:
            continue  # closed as superseded by an earlier promotion in this loop
        if deps.clock.now() >= request.expires_at:
            await close(
                session,
                deps,
                prompt,
                version,
                request,
                RequestState.EXPIRED,
                audit.SYSTEM_ACTOR,
                "no decision before it expired",
            )
            continue
        if await advance(session, deps, prompt, version, request, actor):
            promoted.append(request)
            continue
        checks = await check_request(session, deps, prompt, version, request)
        failed = [c for c in checks if c.state == GateState.FAILED.value]
        if failed:  # the gate it waited on failed: it can never pass as it stands
            why = "; ".join(f"{c.gate}: {c.detail}" for c in failed)
            await close(session, deps, prompt, version, request, RequestState.FAILED, actor, why)
        else:
            await notify(
                session,
                deps,
                "request.updated",
                await view(session, deps, request, prompt, version),
            )
    return promoted


async def rollback(
    session: AsyncSession,
    deps: Deps,
    name: str,
    environment: str,
    actor: str,
    roles: frozenset[str],
    to_version: str | None = None,
    reason: str | None = None,
) -> RollbackResult:
    envs = deps.policy.environments
    envs.check(environment)
    if environment == envs.dev:
        raise BadInput(f"{envs.dev} runs drafts; there is nothing to roll back there")
    if not roles & {"oncall", "approvers"}:
        raise Forbidden(
            f"only on-call or approvers can roll back {environment}",
            hint="roles.oncall and roles.approvers in the policy file list them",
        )
    prompt = await registry.get_prompt(session, name)
    prompt = await registry.lock_prompt(session, prompt.id)
    pointer = await active(session, prompt.id, environment)
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
    if to_version is not None:
        _, target = await registry.get_version(session, name, to_version)
        if target.id == current.id:
            raise GateRefused(f"{name} {to_version} is already active in {environment}")
        if not any(h.version_id == target.id for h in history):
            raise GateRefused(
                f"{name} {to_version} never ran in {environment}, so it is no rollback target",
                hint=f"promote it to {environment} instead",
            )
        if target.status == VersionStatus.ARCHIVED.value:
            raise GateRefused(f"{name} {to_version} is archived")
    else:
        found: PromptVersion | None = None
        for entry in history:
            if entry.version_id == current.id:
                continue
            candidate = await registry.get_version_by_id(session, entry.version_id)
            if candidate.status not in (VersionStatus.REVERTED.value, VersionStatus.ARCHIVED.value):
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
        await transition(
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
        await transition(
            session, deps, prompt, target, env_status, Move.RESTORE, actor, environment=environment
        )
    await deploy(session, deps, prompt, target, environment, actor, Move.ROLLBACK, reason=reason)
    await _stop_soaks(session, deps, current, f"rolled back by {actor}")
    result = RollbackResult(
        prompt=name,
        environment=environment,
        from_version=current.version,
        to_version=target.version,
        actor=actor,
        reason=reason,
        at=deps.clock.now(),
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


async def _stop_soaks(session: AsyncSession, deps: Deps, version: PromptVersion, why: str) -> None:
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


async def archive(
    session: AsyncSession, deps: Deps, name: str, version_name: str, actor: str
) -> str:
    """Retire a replaced or reverted version for good; it can no longer be rolled back to."""
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    require_transition(
        label(prompt, version), VersionStatus(version.status), VersionStatus.ARCHIVED, Move.ARCHIVE
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
            f"{label(prompt, version)} is still live in {', '.join(sorted(live))}",
            hint="promote or roll back another version there first",
        )
    await transition(session, deps, prompt, version, VersionStatus.ARCHIVED, Move.ARCHIVE, actor)
    return version.status
