"""Validation runs and soaks as the gates see them: recorded here, judged in the domain.

The runner (validation) and the soak scheduler write their results through these functions,
which then re-evaluate the open promotion requests of the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import Move, RequestState, RunState, VersionStatus
from promptship.errors import BadInput, GateRefused, NotFound
from promptship.services import audit, outbox, promotions, registry
from promptship.services.deps import Deps, request_code
from promptship.services.views import RunDetail, RunView
from promptship.store.models import (
    Deployment,
    JobClaim,
    PromotionRequest,
    Prompt,
    PromptVersion,
    SoakRun,
    ValidationRun,
)

#: a running run whose worker has not reported for this long is taken as interrupted.
STALE_AFTER = timedelta(seconds=60)
#: who asks for the nightly re-runs of production suites
DRIFT_ACTOR = "promptship:drift"


async def start_run(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str,
    requested_by: str,
    total: int,
    *,
    owner: str | None = None,
    queued: bool = False,
) -> RunView:
    """Record a new run of the version's suite: ``queued`` for a worker, or running now."""
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    active = (
        await session.execute(
            select(ValidationRun).where(
                ValidationRun.version_id == version.id,
                ValidationRun.state.in_([RunState.QUEUED.value, RunState.RUNNING.value]),
            )
        )
    ).scalar_one_or_none()
    if active is not None:
        if _is_stale(deps, active):
            await _stop(session, deps, prompt, version, active, audit.SYSTEM_ACTOR,
                        RunState.INTERRUPTED, "its worker stopped reporting")  # fmt: skip
        else:
            raise GateRefused(
                f"{name} {version_name} already has a test run under way (run {active.id})",
                hint="wait for it, or cancel it",
            )
    now = deps.clock.now()
    run = ValidationRun(
        version_id=version.id,
        content_hash=version.content_hash,
        state=(RunState.QUEUED if queued else RunState.RUNNING).value,
        total=total,
        passed=0,
        failed=0,
        errored=0,
        pass_rate=None,
        results=[],
        regressions=[],
        regression_override=None,
        requested_by=requested_by,
        started_at=now,
        finished_at=None,
        error=None,
        owner=None if queued else owner,
        heartbeat_at=None if queued else now,
    )
    session.add(run)
    await session.flush()
    if version.status == VersionStatus.DRAFT.value:
        await promotions.transition(
            session,
            deps,
            prompt,
            version,
            VersionStatus.TESTING,
            Move.START_TESTS,
            requested_by,
            details={"run": run.id},
        )
    await audit.record(
        session,
        deps.clock,
        actor=requested_by,
        action="validation.queued" if queued else "validation.started",
        prompt=name,
        version=version_name,
        details={"run": run.id, "cases": total},
    )
    return registry.run_view(run)


def _is_stale(deps: Deps, run: ValidationRun) -> bool:
    if run.state != RunState.RUNNING.value:
        return False
    last = run.heartbeat_at or run.started_at
    return deps.clock.now() - last > STALE_AFTER


async def claim_queued(
    session: AsyncSession, deps: Deps, owner: str, run_id: int | None = None
) -> int | None:
    """Take the oldest queued run (or the given one) for this worker; None when there is none.

    The conditional UPDATE makes the claim exclusive across workers and replicas.
    """
    query = select(ValidationRun.id).where(ValidationRun.state == RunState.QUEUED.value)
    if run_id is not None:
        query = query.where(ValidationRun.id == run_id)
    candidates = (await session.execute(query.order_by(ValidationRun.id).limit(5))).scalars().all()
    now = deps.clock.now()
    for run_id in candidates:
        claimed = await session.execute(
            update(ValidationRun)
            .where(ValidationRun.id == run_id, ValidationRun.state == RunState.QUEUED.value)
            .values(state=RunState.RUNNING.value, owner=owner, heartbeat_at=now, started_at=now)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return run_id
    return None


async def heartbeat(
    session: AsyncSession,
    deps: Deps,
    run_id: int,
    owner: str,
    passed: int,
    failed: int,
    errored: int,
) -> bool:
    """Report progress; False means the run is no longer this worker's to finish."""
    result = await session.execute(
        update(ValidationRun)
        .where(
            ValidationRun.id == run_id,
            ValidationRun.owner == owner,
            ValidationRun.state == RunState.RUNNING.value,
        )
        .values(heartbeat_at=deps.clock.now(), passed=passed, failed=failed, errored=errored)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def recover_stale(session: AsyncSession, deps: Deps) -> list[int]:
    """Mark runs whose worker died as interrupted (never ``running`` forever)."""
    cutoff = deps.clock.now() - STALE_AFTER
    ids = (
        (
            await session.execute(
                select(ValidationRun.id).where(
                    ValidationRun.state == RunState.RUNNING.value,
                    func.coalesce(ValidationRun.heartbeat_at, ValidationRun.started_at) < cutoff,
                )
            )
        )
        .scalars()
        .all()
    )
    recovered = []
    for run_id in ids:
        prompt, version, run = await _get_run(session, run_id)
        if _is_stale(deps, run):
            await _stop(session, deps, prompt, version, run, audit.SYSTEM_ACTOR,
                        RunState.INTERRUPTED, "its worker stopped reporting")  # fmt: skip
            recovered.append(run_id)
    return recovered


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to execute a run."""

    run_id: int
    prompt: str
    version: str
    provider: str
    model: str
    temperature: float
    max_tokens: int
    system_prompt: str
    tests: list[dict[str, Any]]
    #: the production version's latest results, for the regression check (None: nothing
    #: in production, or this version is the production version).
    baseline_version: str | None
    baseline_results: list[dict[str, Any]] | None


async def run_spec(session: AsyncSession, deps: Deps, run_id: int) -> RunSpec:
    run = (
        await session.execute(select(ValidationRun).where(ValidationRun.id == run_id))
    ).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no validation run {run_id}")
    version = await registry.get_version_by_id(session, run.version_id)
    prompt = (
        await session.execute(select(Prompt).where(Prompt.id == version.prompt_id))
    ).scalar_one()
    baseline_version, baseline_results = None, None
    pointer = await promotions.active(session, prompt.id, deps.policy.environments.production)
    if pointer is not None and pointer.version_id != version.id:
        production = await registry.get_version_by_id(session, pointer.version_id)
        last = await registry.latest_run(session, production)
        if last is not None and last.state in (RunState.PASSED.value, RunState.FAILED.value):
            baseline_version, baseline_results = production.version, list(last.results)
    return RunSpec(
        run_id=run.id,
        prompt=prompt.name,
        version=version.version,
        provider=version.provider,
        model=version.model,
        temperature=version.temperature,
        max_tokens=version.max_tokens,
        system_prompt=version.system_prompt,
        tests=list(version.content.get("tests", [])),
        baseline_version=baseline_version,
        baseline_results=baseline_results,
    )


async def run_detail(session: AsyncSession, run_id: int) -> RunDetail:
    run = (
        await session.execute(select(ValidationRun).where(ValidationRun.id == run_id))
    ).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no validation run {run_id}")
    version = await registry.get_version_by_id(session, run.version_id)
    prompt = (
        await session.execute(select(Prompt).where(Prompt.id == version.prompt_id))
    ).scalar_one()
    return RunDetail(
        **registry.run_view(run).model_dump(),
        prompt=prompt.name,
        version=version.version,
        requested_by=run.requested_by,
        results=list(run.results),
    )


async def override_regressions(
    session: AsyncSession, deps: Deps, name: str, version_name: str, reason: str, actor: str
) -> RunView:
    """Accept the listed regressions of the version's latest run, with a recorded reason."""
    if not reason.strip():
        raise BadInput("overriding regressions needs a reason")
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    run = await registry.latest_run(session, version)
    if run is None or not run.regressions:
        raise GateRefused(f"{name} {version_name} has no regressions to override")
    run.regression_override = f"{reason.strip()} (by {actor})"
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action="validation.regressions_overridden",
        prompt=name,
        version=version_name,
        details={"run": run.id, "regressions": list(run.regressions), "reason": reason.strip()},
    )
    return registry.run_view(run)


async def _get_run(
    session: AsyncSession, run_id: int
) -> tuple[Prompt, PromptVersion, ValidationRun]:
    run = (
        await session.execute(select(ValidationRun).where(ValidationRun.id == run_id))
    ).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no validation run {run_id}")
    version = await registry.get_version_by_id(session, run.version_id)
    prompt = await registry.lock_prompt(session, version.prompt_id)
    await session.refresh(run)
    await session.refresh(version)
    return prompt, version, run


async def finish_run(
    session: AsyncSession,
    deps: Deps,
    run_id: int,
    results: Sequence[dict[str, Any]],
    actor: str,
    regressions: Sequence[str] = (),
    regression_override: str | None = None,
    error: str | None = None,
    owner: str | None = None,
) -> RunView:
    """Record a run's case results; errored cases (``error`` set) never count as passed."""
    prompt, version, run = await _get_run(session, run_id)
    if run.state != RunState.RUNNING.value or (owner is not None and run.owner != owner):
        raise GateRefused(f"validation run {run_id} is {run.state}; its results were not recorded")
    errored = sum(1 for r in results if r.get("error"))
    passed = sum(1 for r in results if r.get("passed") and not r.get("error"))
    total = len(results)
    run.total, run.passed, run.errored = total, passed, errored
    run.failed = total - passed - errored
    run.pass_rate = passed / total if total else 0.0
    minimum = deps.policy.environments.staging_policy.min_pass_rate
    run.state = (RunState.PASSED if total and run.pass_rate >= minimum else RunState.FAILED).value
    run.results = list(results)
    run.regressions = list(regressions)
    run.regression_override = regression_override
    run.error = error
    run.finished_at = deps.clock.now()
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action="validation.finished",
        prompt=prompt.name,
        version=version.version,
        details={
            "run": run.id,
            "state": run.state,
            "pass_rate": run.pass_rate,
            "passed": passed,
            "failed": run.failed,
            "errored": errored,
            "regressions": len(regressions),
            "regression_override": regression_override,
        },
    )
    waiting = (
        await session.execute(
            select(PromotionRequest.id)
            .where(
                PromotionRequest.version_id == version.id,
                PromotionRequest.state == RequestState.OPEN.value,
            )
            .order_by(PromotionRequest.id)
            .limit(1)
        )
    ).scalar_one_or_none()
    await outbox.enqueue(
        session,
        deps.clock,
        "validation.finished",
        {
            "prompt": prompt.name,
            "version": version.version,
            "run": registry.run_view(run).model_dump(mode="json"),
            "failures": first_failures(results),
        },
        channel=deps.policy.channel,
        # threaded under the promotion that waited for this run, if one did
        thread_key=request_code(waiting) if waiting else f"{prompt.name}@{version.version}",
    )
    if run.requested_by == DRIFT_ACTOR and run.state == RunState.FAILED.value:
        await outbox.enqueue(
            session,
            deps.clock,
            "drift.alert",
            {
                "prompt": prompt.name,
                "version": version.version,
                "run": registry.run_view(run).model_dump(mode="json"),
                "min_pass_rate": minimum,
                "failures": first_failures(results),
            },
            channel=deps.policy.channel,
            thread_key=f"{prompt.name}@{version.version}",
            dedupe_key=f"drift.alert:{run.id}",
        )
    await promotions.reevaluate(session, deps, prompt, version, actor)
    if version.status == VersionStatus.TESTING.value:
        await promotions.transition(
            session,
            deps,
            prompt,
            version,
            VersionStatus.DRAFT,
            Move.FINISH_TESTS,
            actor,
            details={"run": run.id, "state": run.state},
        )
    return registry.run_view(run)


def first_failures(results: Sequence[dict[str, Any]], limit: int = 10) -> list[dict[str, Any]]:
    """The first failed or errored cases, trimmed for a notification."""
    shown = []
    for r in results:
        if r.get("passed") and not r.get("error"):
            continue
        shown.append(
            {
                "input": str(r.get("input", ""))[:300],
                "type": r.get("type"),
                "expected": str(r.get("expected", ""))[:300],
                "got": str(r.get("got") or "")[:300],
                "why": str(r.get("error") or r.get("detail") or "")[:300],
                "errored": bool(r.get("error")),
            }
        )
        if len(shown) == limit:
            break
    return shown


async def stop_run(
    session: AsyncSession, deps: Deps, run_id: int, actor: str, state: RunState, why: str
) -> RunView:
    """Cancel a run, or mark it interrupted (a crash); the version goes back to draft."""
    prompt, version, run = await _get_run(session, run_id)
    return await _stop(session, deps, prompt, version, run, actor, state, why)


async def _stop(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    run: ValidationRun,
    actor: str,
    state: RunState,
    why: str,
) -> RunView:
    if not RunState(run.state).active:
        return registry.run_view(run)
    run.state, run.error, run.finished_at = state.value, why, deps.clock.now()
    await session.flush()
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action=f"validation.{state.value}",
        prompt=prompt.name,
        version=version.version,
        details={"run": run.id, "why": why},
    )
    if version.status == VersionStatus.TESTING.value:
        await promotions.transition(
            session,
            deps,
            prompt,
            version,
            VersionStatus.DRAFT,
            Move.FINISH_TESTS,
            actor,
            details={"run": run.id, "state": state.value},
        )
    return registry.run_view(run)


async def interrupted_run_ids(session: AsyncSession) -> list[int]:
    return list(
        (
            await session.execute(
                select(ValidationRun.id).where(ValidationRun.state == RunState.RUNNING.value)
            )
        )
        .scalars()
        .all()
    )


async def finish_soak(
    session: AsyncSession,
    deps: Deps,
    soak_id: int,
    passed: bool,
    actor: str,
    failure: str | None = None,
    *,
    state: str | None = None,
) -> SoakRun:
    soak = (
        await session.execute(select(SoakRun).where(SoakRun.id == soak_id))
    ).scalar_one_or_none()
    if soak is None:
        raise NotFound(f"no soak {soak_id}")
    version = await registry.get_version_by_id(session, soak.version_id)
    prompt = await registry.lock_prompt(session, version.prompt_id)
    await session.refresh(soak)
    if soak.state != "running":
        return soak
    await session.execute(
        update(SoakRun)
        .where(SoakRun.id == soak.id)
        .values(
            state=state or ("passed" if passed else "failed"),
            finished_at=deps.clock.now(),
            failure=failure,
        )
    )
    await session.refresh(soak)
    await audit.record(
        session,
        deps.clock,
        actor=actor,
        action=f"soak.{soak.state}",
        prompt=prompt.name,
        version=version.version,
        environment=soak.environment,
        details={"soak": soak.id, "kind": soak.kind, "failure": failure},
    )
    await promotions.reevaluate(session, deps, prompt, version, actor)
    return soak


async def start_drift_watch(
    session: AsyncSession, deps: Deps, key: str, owner: str
) -> list[RunView]:
    """Claim the drift watch's tick ``key`` (once across replicas) and queue a run of each
    production version's suite; a pass rate under the gate then alerts the channel."""
    now = deps.clock.now()
    claimed = await session.execute(
        registry._insert(session)(JobClaim)
        .values(key=key, owner=owner, lease_until=now, claimed_at=now, done_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return []
    production = deps.policy.environments.production
    live = (
        await session.execute(
            select(Prompt.name, PromptVersion.version, PromptVersion.content)
            .join(Deployment, Deployment.prompt_id == Prompt.id)
            .join(PromptVersion, PromptVersion.id == Deployment.version_id)
            .where(Deployment.environment == production)
            .order_by(Prompt.name)
        )
    ).all()
    queued = []
    for name, version, content in live:
        cases = len(content.get("tests", []))
        if not cases:
            continue
        try:
            async with session.begin_nested():
                queued.append(
                    await start_run(session, deps, name, version, DRIFT_ACTOR, cases, queued=True)
                )
        except GateRefused:
            continue  # a run of it is under way already
    return queued
