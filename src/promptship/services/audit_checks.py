"""Cross-checks of the tables the gates read against the audit log: a row written straight
into the database, without the service that records its event, shows up here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from promptship.domain.lifecycle import RequestState, RunState
from promptship.services import audit, registry, tokens
from promptship.services.deps import request_code
from promptship.store.models import (
    ApiToken,
    Approval,
    AuditEvent,
    Deployment,
    PromotionRequest,
    Prompt,
    PromptVersion,
    SoakRun,
    ValidationRun,
)

LIMIT = 20


async def cross_check(session: AsyncSession) -> list[str]:
    """Plain sentences, one per mismatch (up to ``LIMIT`` of each kind)."""
    return [
        *await _approvals(session),
        *await _deployments(session),
        *await _closed_requests(session),
        *await _request_terms(session),
        *await _version_contents(session),
        *await _token_rows(session),
        *await _soak_results(session),
        *await _run_rows(session),
    ]


def request_mismatches(
    request: PromotionRequest, prompt: str, version: str, event: AuditEvent
) -> list[str]:
    """The fields of a request's row that differ from its ``request.created`` event. The
    expiry and the reason are compared only when the event records them (older events do
    not); the proxy always is (every event records one the actor had)."""
    details = event.details
    requester, requested_by = audit.created_requester(event)
    recorded: dict[str, object] = {
        "prompt": event.prompt,
        "version": event.version,
        "environment": event.environment,
        "kind": details.get("kind"),
        "requester": requester,
        "requested by": requested_by,
        "required approvals": details.get("required_approvals"),
    }
    stored: dict[str, object] = {
        "prompt": prompt,
        "version": version,
        "environment": request.environment,
        "kind": request.kind,
        "requester": request.requester,
        "requested by": request.requested_by,
        "required approvals": request.required_approvals,
    }
    if "reason" in details:
        recorded["reason"], stored["reason"] = details["reason"], request.reason
    if "expires_at" in details:
        recorded["expiry"] = _parsed_time(details["expires_at"])
        stored["expiry"] = request.expires_at
    return [name for name, value in stored.items() if recorded[name] != value]


def _parsed_time(value: object) -> datetime | str | None:
    """An event's ISO time as a datetime (compared by instant); anything else as it is."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return value


def run_matches(run: ValidationRun, events: Sequence[AuditEvent]) -> bool:
    """Whether a finished run's row holds the result its last ``validation.finished`` event
    among ``events`` (the run's, oldest first) recorded, with the override its events granted."""
    finished = [e.details for e in events if e.action == audit.RUN_FINISHED]
    if not finished:
        return False
    result = finished[-1]
    override = result.get("regression_override")
    for e in events:
        if e.action == audit.RUN_OVERRIDDEN:
            override = f"{e.details.get('reason')} (by {e.actor})"
    return (
        result.get("state") == run.state
        and result.get("pass_rate") == run.pass_rate
        and (result.get("passed"), result.get("failed"), result.get("errored"))
        == (run.passed, run.failed, run.errored)
        and result.get("regressions") == len(run.regressions)
        and override == run.regression_override
    )


async def _approvals(session: AsyncSession) -> list[str]:
    action = case((Approval.approve, "request.approved"), else_="request.rejection")
    rows = await session.execute(
        select(Approval.request_id, Approval.user_id, Approval.approve)
        .where(
            ~exists().where(
                AuditEvent.request_id == Approval.request_id,
                AuditEvent.actor == Approval.user_id,
                AuditEvent.action == action,
            )
        )
        .order_by(Approval.id)
        .limit(LIMIT)
    )
    unrecorded = [
        f"{request_code(request_id)} has {'an approval' if approve else 'a rejection'} by "
        f"{user} that the audit log never recorded (inserted into the database directly?)"
        for request_id, user, approve in rows.all()
    ]
    approved = AuditEvent.action == audit.DECISION_ACTIONS[True]
    events = await session.execute(
        select(AuditEvent.request_id, AuditEvent.actor, approved)
        .where(
            AuditEvent.action.in_(audit.DECISION_ACTIONS.values()),
            ~exists().where(
                Approval.request_id == AuditEvent.request_id,
                Approval.user_id == AuditEvent.actor,
                Approval.approve == approved,
            ),
        )
        .order_by(AuditEvent.seq)
        .limit(LIMIT)
    )
    missing = [
        f"{request_code(request_id)} has {'an approval' if approve else 'a rejection'} by "
        f"{user} in the audit log but no row for it (deleted from the database directly?)"
        for request_id, user, approve in events.all()
        if request_id is not None
    ]
    return [*unrecorded, *missing]


async def _deployments(session: AsyncSession) -> list[str]:
    """Each pointer against the newest ``deployment.changed`` of its prompt and environment:
    the version it names, that version's prompt, and (when the event has it) its content."""
    newest = (
        select(
            AuditEvent.prompt,
            AuditEvent.environment,
            func.max(AuditEvent.seq).label("seq"),
        )
        .where(AuditEvent.action == "deployment.changed")
        .group_by(AuditEvent.prompt, AuditEvent.environment)
        .subquery()
    )
    logged = aliased(AuditEvent)
    owner = aliased(Prompt)
    rows = await session.stream(
        select(Prompt.name, Deployment.environment, PromptVersion, owner.name, logged)
        .join(Prompt, Prompt.id == Deployment.prompt_id)
        .join(PromptVersion, PromptVersion.id == Deployment.version_id)
        .join(owner, owner.id == PromptVersion.prompt_id)
        .outerjoin(
            newest,
            and_(newest.c.prompt == Prompt.name, newest.c.environment == Deployment.environment),
        )
        .outerjoin(logged, logged.seq == newest.c.seq)
        .order_by(Prompt.name, Deployment.environment)
        .execution_options(yield_per=1000)
    )
    problems: list[str] = []
    async for prompt, environment, version, version_prompt, event in rows:
        live = version.version
        if version_prompt != prompt:
            problems.append(
                f"{prompt} in {environment} points at {version_prompt} {live}, a version of "
                "another prompt (the pointer was changed directly?)"
            )
        elif event is None:
            problems.append(
                f"{prompt} runs {live} in {environment}, but the audit log records no "
                "deployment of it there (the pointer was written directly?)"
            )
        elif event.version != live:
            problems.append(
                f"{prompt} runs {live} in {environment}, but the audit log's last deployment "
                f"there was {event.version} (the pointer was changed directly?)"
            )
        elif event.details.get("content_hash", version.content_hash) != version.content_hash:
            problems.append(
                f"{prompt} runs {live} in {environment} with other content than its signed "
                "deployment.changed event recorded (the pointer was changed directly?)"
            )
        if len(problems) >= LIMIT:
            break
    return problems


async def _closed_requests(session: AsyncSession) -> list[str]:
    rows = await session.execute(
        select(PromotionRequest.id, PromotionRequest.state)
        .where(
            PromotionRequest.state != RequestState.OPEN.value,
            ~exists().where(
                AuditEvent.request_id == PromotionRequest.id,
                AuditEvent.action == "request." + PromotionRequest.state,
            ),
        )
        .order_by(PromotionRequest.id)
        .limit(LIMIT)
    )
    problems = [
        f"{request_code(request_id)} is {state}, but the audit log never recorded it closing "
        "(changed in the database directly?)"
        for request_id, state in rows.all()
    ]
    closes = [f"request.{s.value}" for s in RequestState if not s.is_open]
    reopened = await session.execute(
        select(PromotionRequest.id, func.min(AuditEvent.action))
        .join(AuditEvent, AuditEvent.request_id == PromotionRequest.id)
        .where(PromotionRequest.state == RequestState.OPEN.value, AuditEvent.action.in_(closes))
        .group_by(PromotionRequest.id)
        .order_by(PromotionRequest.id)
        .limit(LIMIT)
    )
    return problems + [
        f"{request_code(request_id)} is open, but the audit log recorded it "
        f"{action.removeprefix('request.')} (reopened in the database directly?)"
        for request_id, action in reopened.all()
    ]


async def _request_terms(session: AsyncSession) -> list[str]:
    created = aliased(AuditEvent)
    rows = await session.stream(
        select(PromotionRequest, Prompt.name, PromptVersion, created)
        .join(Prompt, Prompt.id == PromotionRequest.prompt_id)
        .join(PromptVersion, PromptVersion.id == PromotionRequest.version_id)
        .outerjoin(
            created,
            and_(created.request_id == PromotionRequest.id, created.action == "request.created"),
        )
        .order_by(PromotionRequest.id)
        .execution_options(yield_per=1000)
    )
    problems: list[str] = []
    async for request, prompt, version, event in rows:
        code = request_code(request.id)
        if version.prompt_id != request.prompt_id:
            problems.append(
                f"{code} is for a version of another prompt than its own (changed in the "
                "database directly?)"
            )
        elif event is None:
            problems.append(
                f"{code} has no request.created event in the audit log (inserted into the "
                "database directly?)"
            )
        elif fields := request_mismatches(request, prompt, version.version, event):
            problems.append(
                f"{code}'s {', '.join(fields)} differ from its signed request.created event "
                "(changed in the database directly?)"
            )
        if len(problems) >= LIMIT:
            break
    return problems


async def _version_contents(session: AsyncSession) -> list[str]:
    registered = aliased(AuditEvent)
    rows = await session.stream(
        select(PromptVersion, Prompt.name, registered)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .outerjoin(
            registered,
            and_(
                registered.prompt == Prompt.name,
                registered.version == PromptVersion.version,
                registered.action == "version.registered",
            ),
        )
        .order_by(PromptVersion.id)
        .execution_options(yield_per=500)
    )
    problems: list[str] = []
    async for version, prompt, event in rows:
        label = f"{prompt} {version.version}"
        details = event.details if event is not None else None
        if registry.served_content_hash(version) != version.content_hash:
            problems.append(
                f"{label}'s stored content no longer matches its content hash (edited in the "
                "database directly?)"
            )
        elif details is None:
            problems.append(
                f"{label} has no version.registered event in the audit log (inserted into "
                "the database directly?)"
            )
        elif details.get("content_hash") != version.content_hash:
            problems.append(
                f"{label}'s content hash differs from the one its signed version.registered "
                "event recorded (its content was replaced in the database directly?)"
            )
        elif audit.registered_authorship(event) != (version.author, version.pushed_by):
            problems.append(
                f"{label}'s author or pusher differs from its signed version.registered event "
                "(changed in the database directly?)"
            )
        if len(problems) >= LIMIT:
            break
    return problems


async def _token_rows(session: AsyncSession) -> list[str]:
    keys = audit.keyring(session).keys()
    revoked = await tokens.signed_revocations(session)
    rows = await session.stream_scalars(
        select(ApiToken).order_by(ApiToken.id).execution_options(yield_per=1000)
    )
    problems: list[str] = []
    async for row in rows:
        if not tokens.mac_holds(row, keys):
            problems.append(
                f"token {row.prefix} (for {row.subject}) has no valid signature: it was not "
                "issued by promptship (inserted or changed in the database directly?)"
            )
        elif row.revoked_at is None and row.id in revoked:
            problems.append(
                f"token {row.prefix} (for {row.subject}) was revoked, but its row says it is "
                "not (the revocation was undone in the database directly?)"
            )
        if len(problems) >= LIMIT:
            break
    return problems


async def _soak_results(session: AsyncSession) -> list[str]:
    """A soak marked passed must have its ``soak.passed`` event (the chain check vouches
    for the event itself)."""
    recorded = {
        details.get("soak")
        for details in (
            await session.scalars(
                select(AuditEvent.details).where(AuditEvent.action == "soak.passed")
            )
        ).all()
    }
    rows = await session.execute(
        select(SoakRun.id, Prompt.name, PromptVersion.version)
        .join(PromptVersion, PromptVersion.id == SoakRun.version_id)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .where(SoakRun.state == "passed")
        .order_by(SoakRun.id)
    )
    missing = [(soak, name, version) for soak, name, version in rows.all() if soak not in recorded]
    logged = await session.execute(
        select(AuditEvent.prompt, AuditEvent.version, AuditEvent.details)
        .where(AuditEvent.action.in_(("soak.passed", "soak.failed", "soak.restarted")))
        .order_by(AuditEvent.seq)
    )
    soaks = {details.get("soak"): (prompt, version) for prompt, version, details in logged.all()}
    present = set((await session.scalars(select(SoakRun.id))).all())
    deleted = [label for soak, label in soaks.items() if soak not in present]
    return [
        *(
            f"the soak of {name} {version} is marked passed, but the audit log never recorded "
            "it passing (changed in the database directly?)"
            for soak, name, version in missing[:LIMIT]
        ),
        *(
            f"the soak of {name} {version} is in the audit log but has no row (deleted from the "
            "database directly?)"
            for name, version in deleted[:LIMIT]
        ),
    ]


async def _run_rows(session: AsyncSession) -> list[str]:
    """Every finished run the audit log recorded must still have its row (deleting a failed
    run's row would otherwise bring an older passed one back to the tests gate), and every
    finished run's row must hold the result its recorded events give it."""
    events = (
        await session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.in_((audit.RUN_FINISHED, audit.RUN_OVERRIDDEN)))
            .order_by(AuditEvent.seq)
        )
    ).all()
    recorded: dict[object, tuple[str | None, str | None]] = {}
    of_run: dict[object, list[AuditEvent]] = {}
    for e in events:
        run_id = e.details.get("run")
        of_run.setdefault(run_id, []).append(e)
        if e.action == audit.RUN_FINISHED:
            recorded[run_id] = (e.prompt, e.version)
    present = set((await session.scalars(select(ValidationRun.id))).all())
    missing = [label for run, label in recorded.items() if run not in present]
    finished = [RunState.PASSED.value, RunState.FAILED.value]
    rows = await session.stream(
        select(ValidationRun, Prompt.name, PromptVersion.version)
        .join(PromptVersion, PromptVersion.id == ValidationRun.version_id)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .where(ValidationRun.state.in_(finished))
        .order_by(ValidationRun.id)
        .execution_options(yield_per=1000)
    )
    changed: list[str] = []
    async for run, prompt, version in rows:
        # a row without any recorded result is left to the chain and its checkpoints: the
        # newest events may have been cut off, and the gates refuse such a run anyway
        if run.id in recorded and not run_matches(run, of_run[run.id]):
            changed.append(
                f"{prompt} {version}'s test run {run.id} differs from its signed "
                "validation.finished event (changed in the database directly?)"
            )
            if len(changed) >= LIMIT:
                break
    return [
        *(
            f"{prompt} {version} has a finished test run in the audit log but no row for it "
            "(deleted from the database directly?)"
            for prompt, version in missing[:LIMIT]
        ),
        *changed,
    ]
