"""Validation runs: queued, claimed by a worker, kept alive by its heartbeats, stopped.

What a finished run or soak does to the gates is in :mod:`promptship.services.findings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import SYSTEM, Actor
from promptship.domain.lifecycle import Move, RunState, VersionStatus
from promptship.errors import GateRefused, NotFound
from promptship.services import deployments, identities, lifecycle, registry
from promptship.services.deps import Deps
from promptship.services.views import RunDetail, RunView
from promptship.store.models import Prompt, PromptVersion, ValidationRun

#: a running run whose worker has not reported for this long is taken as interrupted.
STALE_AFTER = timedelta(seconds=60)
#: a run interrupted (its worker died) goes back to the queue until it was started this often.
MAX_ATTEMPTS = 2


async def start_run(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str,
    actor: Actor,
    total: int | None = None,
    *,
    owner: str | None = None,
    queued: bool = False,
) -> RunView:
    """Record a new run of the version's suite: ``queued`` for a worker, or running now.
    ``total`` is its count of cases: by default the suite's."""
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    if total is None:
        total = len(version.content.get("tests") or [])
    active = (
        await session.execute(
            select(ValidationRun).where(
                ValidationRun.version_id == version.id,
                ValidationRun.state.in_([RunState.QUEUED.value, RunState.RUNNING.value]),
            )
        )
    ).scalar_one_or_none()
    if active is not None:
        if is_stale(deps, active):
            await _stop(session, deps, prompt, version, active, SYSTEM,
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
        requested_by=actor.id,
        started_at=now,
        finished_at=None,
        error=None,
        owner=None if queued else owner,
        heartbeat_at=None if queued else now,
        attempts=0 if queued else 1,
    )
    session.add(run)
    await session.flush()
    if version.status == VersionStatus.DRAFT.value:
        await lifecycle.transition(
            session,
            deps,
            prompt,
            version,
            VersionStatus.TESTING,
            Move.START_TESTS,
            actor,
            details={"run": run.id},
        )
    await identities.record(
        session,
        deps.clock,
        actor,
        action="validation.queued" if queued else "validation.started",
        prompt=name,
        version=version_name,
        details={"run": run.id, "cases": total},
    )
    return registry.run_view(run)


def is_stale(deps: Deps, run: ValidationRun) -> bool:
    """A running run whose worker has not reported within :data:`STALE_AFTER`."""
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
            .values(
                state=RunState.RUNNING.value,
                owner=owner,
                heartbeat_at=now,
                started_at=now,
                attempts=ValidationRun.attempts + 1,
            )
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


async def stale_run_ids(session: AsyncSession, deps: Deps) -> list[int]:
    """Running runs whose worker stopped reporting (it died, or its host did)."""
    cutoff = deps.clock.now() - STALE_AFTER
    return list(
        (
            await session.execute(
                select(ValidationRun.id)
                .where(
                    ValidationRun.state == RunState.RUNNING.value,
                    func.coalesce(ValidationRun.heartbeat_at, ValidationRun.started_at) < cutoff,
                )
                .order_by(ValidationRun.id)
            )
        )
        .scalars()
        .all()
    )


async def requeue(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    run: ValidationRun,
    why: str,
) -> RunView:
    """Put an interrupted run back in the queue, from its first case, for any worker."""
    run.state, run.owner, run.heartbeat_at = RunState.QUEUED.value, None, None
    run.passed = run.failed = run.errored = 0
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        SYSTEM,
        action="validation.requeued",
        prompt=prompt.name,
        version=version.version,
        details={"run": run.id, "attempts": run.attempts, "why": why},
    )
    return registry.run_view(run)


async def interrupt(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    run: ValidationRun,
    why: str,
) -> RunView:
    """Mark a run interrupted for good (the version goes back to draft)."""
    return await _stop(session, deps, prompt, version, run, SYSTEM, RunState.INTERRUPTED, why)


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
    #: the template's few-shot turns and declared variables (with defaults)
    messages: list[dict[str, str]]
    variables: dict[str, Any] | None
    #: the production version's latest results, for the regression check (None: nothing
    #: in production, or this version is the production version).
    baseline_version: str | None
    baseline_results: list[dict[str, Any]] | None


async def _run_and_version(
    session: AsyncSession, run_id: int
) -> tuple[ValidationRun, PromptVersion]:
    run = (
        await session.execute(select(ValidationRun).where(ValidationRun.id == run_id))
    ).scalar_one_or_none()
    if run is None:
        raise NotFound(f"no validation run {run_id}")
    return run, await registry.get_version_by_id(session, run.version_id)


async def run_spec(session: AsyncSession, deps: Deps, run_id: int) -> RunSpec:
    run, version = await _run_and_version(session, run_id)
    prompt = await registry.get_prompt_by_id(session, version.prompt_id)
    baseline_version, baseline_results = None, None
    production = await deployments.live_version(
        session, prompt.id, deps.policy.environments.production
    )
    if production is not None and production.id != version.id:
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
        messages=list(version.content.get("messages") or []),
        variables=version.content.get("variables"),
        baseline_version=baseline_version,
        baseline_results=baseline_results,
    )


async def run_detail(session: AsyncSession, run_id: int) -> RunDetail:
    run, version = await _run_and_version(session, run_id)
    prompt = await registry.get_prompt_by_id(session, version.prompt_id)
    return RunDetail(
        **registry.run_view(run).model_dump(),
        prompt=prompt.name,
        version=version.version,
        requested_by=run.requested_by,
        results=list(run.results),
    )


async def load_run(
    session: AsyncSession, run_id: int
) -> tuple[Prompt, PromptVersion, ValidationRun]:
    run, version = await _run_and_version(session, run_id)
    prompt = await registry.lock_prompt(session, version.prompt_id)
    await session.refresh(run)
    await session.refresh(version)
    return prompt, version, run


async def stop_run(
    session: AsyncSession, deps: Deps, run_id: int, actor: Actor, state: RunState, why: str
) -> RunView:
    """Cancel a run, or mark it interrupted (a crash); the version goes back to draft."""
    prompt, version, run = await load_run(session, run_id)
    return await _stop(session, deps, prompt, version, run, actor, state, why)


async def _stop(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    run: ValidationRun,
    actor: Actor,
    state: RunState,
    why: str,
) -> RunView:
    if not RunState(run.state).active:
        return registry.run_view(run)
    run.state, run.error, run.finished_at = state.value, why, deps.clock.now()
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        actor,
        action=f"validation.{state.value}",
        prompt=prompt.name,
        version=version.version,
        details={"run": run.id, "why": why},
    )
    await end_testing(session, deps, prompt, version, actor, run)
    return registry.run_view(run)


async def end_testing(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    actor: Actor,
    run: ValidationRun,
) -> None:
    """A version whose run ended with nothing waiting on it goes back to draft."""
    if version.status == VersionStatus.TESTING.value:
        await lifecycle.transition(
            session,
            deps,
            prompt,
            version,
            VersionStatus.DRAFT,
            Move.FINISH_TESTS,
            actor,
            details={"run": run.id, "state": run.state},
        )


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
