"""Reading what the gates of a promotion request need, and the request as users see it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import (
    Decision,
    GateFacts,
    GateState,
    RequestKind,
    RequestState,
    RunState,
    RunSummary,
    SoakSummary,
    VersionStatus,
    evaluate,
    find_transition,
    soak_cycles,
)
from promptship.services import (
    audit,
    audit_checks,
    deployments,
    evidence,
    lifecycle,
    parties,
    registry,
)
from promptship.services.deps import Deps, request_code
from promptship.services.views import CheckView, DecisionView, RequestView
from promptship.store.models import (
    Approval,
    AuditEvent,
    PromotionRequest,
    Prompt,
    PromptVersion,
    SoakRun,
    ValidationRun,
)

TAMPERED = "the request's record does not match its signed audit event; see promptship audit verify"

RUN_TAMPERED = (
    "the test run's record does not match its signed audit event; see promptship audit verify"
)
SOAK_TAMPERED = (
    "the soak's record does not match its signed audit event; see promptship audit verify"
)


async def run_matches_signed(
    session: AsyncSession, prompt: Prompt, version: PromptVersion, run: ValidationRun
) -> bool:
    """Whether a finished run's result is the one its signed ``validation.finished`` event
    recorded (and its regression override one a signed event granted). A failed run is
    checked too: its numbers edited into a pass must not read as one."""
    if not RunState(run.state).finished:
        return True
    signed = await audit.signed_run_events(session, prompt.name, version.version, run.id)
    return audit_checks.run_matches(run, signed)


async def newest_run_present(
    session: AsyncSession, prompt: Prompt, version: PromptVersion, run: ValidationRun | None
) -> bool:
    """Whether the run the gate reads is no older than the newest signed finished run of the
    version: deleting a failed run's row must not bring an older passed one back."""
    signed = await audit.signed_version_events(
        session, prompt.name, version.version, (audit.RUN_FINISHED,), newest_first=True
    )
    if not signed:
        return True
    newest = signed[0]
    recorded = newest.details.get("run")
    return not isinstance(recorded, int) or (run is not None and run.id >= recorded)


@dataclass(frozen=True)
class SignedSoaks:
    """What signed events say of a version's staging soaks: the newest one recorded
    finishing or starting over (a soak row older than it means a newer one, perhaps failed,
    was deleted), and the ones recorded passing."""

    newest: int | None
    passed: frozenset[int]

    def vouch_for(self, soak: SoakRun) -> bool:
        """Only a passed soak opens the soak gate, so only that needs its signed event."""
        current = self.newest is None or soak.id >= self.newest
        return current and (soak.state != "passed" or soak.id in self.passed)


async def signed_soaks(
    session: AsyncSession, prompt: Prompt, version: PromptVersion, environment: str
) -> SignedSoaks:
    events = await audit.signed_version_events(
        session,
        prompt.name,
        version.version,
        ("soak.passed", "soak.failed", "soak.restarted"),
        environment=environment,
        newest_first=True,
    )
    signed = [
        (e.action, soak)
        for e in events
        if isinstance(soak := e.details.get("soak"), int)
        and e.details.get("kind", deployments.STAGING_SOAK) == deployments.STAGING_SOAK
    ]
    return SignedSoaks(
        newest=signed[0][1] if signed else None,
        passed=frozenset(soak for action, soak in signed if action == "soak.passed"),
    )


def _run_summary(run: ValidationRun) -> RunSummary:
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
        attempts=run.attempts,
    )


@dataclass(frozen=True)
class CountedDecision:
    """A decision the gates count: its row, with roles and comment from its signed event."""

    user_id: str
    approve: bool
    comment: str | None
    roles: frozenset[str]
    created_at: datetime
    via: str | None


CLOSE_ACTIONS = tuple(f"request.{s.value}" for s in RequestState if not s.is_open)
CLOSED_TAMPERED = (
    "the audit log recorded this request closed; its record was reopened in the database "
    "directly; see promptship audit verify"
)


async def signed_close(session: AsyncSession, request_id: int) -> AuditEvent | None:
    """The first signed event that closed the request, whatever its row now says."""
    events = await audit.signed_events(session, request_id, CLOSE_ACTIONS)
    return events[0] if events else None


async def decisions_on(session: AsyncSession, request_id: int) -> list[CountedDecision]:
    """The approvals and rejections of a request as its signed events record them, oldest
    first: a row without its signed event does not count, a signed decision whose row was
    deleted still does, and the roles are the ones the event recorded, never the row's.
    Rows only lend their ``via`` for display."""
    events = await audit.signed_events(session, request_id, audit.DECISION_ACTIONS.values())
    if not events:
        return []
    rows = {
        (row.user_id, row.approve): row
        for row in (
            await session.execute(select(Approval).where(Approval.request_id == request_id))
        )
        .scalars()
        .all()
    }
    counted: dict[tuple[str, bool], CountedDecision] = {}
    for e in events:
        approve = e.action == audit.DECISION_ACTIONS[True]
        if (e.actor, approve) in counted:
            continue
        roles, comment = e.details.get("roles"), e.details.get("comment")
        row = rows.get((e.actor, approve))
        counted[(e.actor, approve)] = CountedDecision(
            user_id=e.actor,
            approve=approve,
            comment=comment if isinstance(comment, str) else None,
            roles=frozenset(r for r in roles if isinstance(r, str))
            if isinstance(roles, list)
            else frozenset(),
            created_at=e.at,
            via=row.via if row is not None else None,
        )
    return list(counted.values())


async def signed_terms(
    session: AsyncSession, prompt: Prompt, version: PromptVersion, request: PromotionRequest
) -> int | None:
    """The approvals the request's signed ``request.created`` event requires; None when it
    has no such event or the row disagrees with it (written in the database directly)."""
    event = await audit.signed_creation(session, request.id)
    if event is None or audit_checks.request_mismatches(
        request, prompt.name, version.version, event
    ):
        return None
    required = event.details.get("required_approvals")
    return required if isinstance(required, int) else None


async def gate_facts(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    decisions: list[CountedDecision],
    required_approvals: int,
) -> GateFacts:
    policy = deps.policy
    envs = policy.environments
    soak = None
    if request.environment == envs.production and request.kind == RequestKind.NORMAL:
        row = await deployments.latest_soak(session, version.id, envs.staging)
        if row is not None:
            genuine = (await signed_soaks(session, prompt, version, envs.staging)).vouch_for(row)
            soak = SoakSummary(
                soak_id=row.id,
                state=row.state if genuine else "failed",
                started_at=row.started_at,
                ends_at=row.ends_at,
                cycles_done=row.cycles_done,
                worst_divergence=row.worst_divergence,
                failure=row.failure if genuine else SOAK_TAMPERED,
                cycles_total=soak_cycles(
                    row.ends_at - row.started_at, envs.production_policy.soak_interval
                ),
            )
    latest = await registry.latest_run(session, version)
    run = _run_summary(latest) if latest is not None else None
    override_refused = None
    if latest is not None and latest.regressions and latest.regression_override:
        # an override counts for a request only when none of its parties gave it
        by, _ = await evidence.signed_override(session, prompt, version, latest)
        party = by and await parties.party_to(
            session, deps, by, prompt, version, [request], authorship=False
        )
        override_refused = f"{by} {party}" if party else None
    return GateFacts(
        label=lifecycle.label(prompt, version),
        status=VersionStatus(version.status),
        target=request.environment,
        now=deps.clock.now(),
        min_pass_rate=envs.staging_policy.min_pass_rate,
        regression_check=envs.staging_policy.regression_check,
        run=run,
        override_refused=override_refused,
        required_approvals=required_approvals,
        decisions=tuple(
            Decision(user=d.user_id, approve=d.approve, roles=d.roles) for d in decisions
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
        prompt=prompt.name,
    )


async def check_request(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
    decisions: list[CountedDecision] | None = None,
) -> list[CheckView]:
    """The request's gates now. A request whose row does not match its signed
    ``request.created`` event, or whose passed test run does not match its signed
    ``validation.finished`` event, fails an ``integrity`` check and is never promoted."""
    if decisions is None:
        decisions = await decisions_on(session, request.id)
    transition = find_transition(
        VersionStatus(version.status),
        deps.env_status(request.environment),
        lifecycle.target_move(request),
    )
    if transition is None:
        return []
    required = await signed_terms(session, prompt, version, request)
    if required is None:
        return [CheckView(gate="integrity", state=GateState.FAILED.value, detail=TAMPERED)]
    if await signed_close(session, request.id) is not None:
        return [CheckView(gate="integrity", state=GateState.FAILED.value, detail=CLOSED_TAMPERED)]
    run = await registry.latest_run(session, version)
    if not await newest_run_present(session, prompt, version, run) or (
        run is not None and not await run_matches_signed(session, prompt, version, run)
    ):
        return [CheckView(gate="integrity", state=GateState.FAILED.value, detail=RUN_TAMPERED)]
    facts = await gate_facts(session, deps, prompt, version, request, decisions, required)
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
    with_evidence: bool = True,
) -> RequestView:
    """The request as people see it: decisions, the gates now (while it is open) and, unless
    ``with_evidence`` is off (a list of many), the evidence an approval message carries."""
    prompt = prompt or await registry.get_prompt_by_id(session, request.prompt_id)
    version = version or await registry.get_version_by_id(session, request.version_id)
    decisions = await decisions_on(session, request.id)
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
                via=d.via,
            )
            for d in decisions
        ],
        checks=checks,
        created_at=request.created_at,
        expires_at=request.expires_at,
        closed_at=request.closed_at,
        closed_by=request.closed_by,
        close_reason=request.close_reason,
        evidence=(
            await evidence.gather(session, deps, prompt, version, request)
            if with_evidence
            else None
        ),
    )
