"""Validation runs and soaks as the gates see them: recorded here, judged in the domain.

The runner (validation) and the soak scheduler write their results through these functions,
which then re-evaluate the open promotion requests of the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import Move, RunState, VersionStatus
from promptship.errors import GateRefused, NotFound
from promptship.services import audit, outbox, promotions, registry
from promptship.services.deps import Deps
from promptship.services.views import RunView
from promptship.store.models import Prompt, PromptVersion, SoakRun, ValidationRun


async def start_run(
    session: AsyncSession, deps: Deps, name: str, version_name: str, requested_by: str, total: int
) -> RunView:
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    running = (
        await session.execute(
            select(ValidationRun).where(
                ValidationRun.version_id == version.id,
                ValidationRun.state == RunState.RUNNING.value,
            )
        )
    ).scalar_one_or_none()
    if running is not None:
        raise GateRefused(
            f"{name} {version_name} already has a test run under way (run {running.id})"
        )
    run = ValidationRun(
        version_id=version.id,
        content_hash=version.content_hash,
        state=RunState.RUNNING.value,
        total=total,
        passed=0,
        failed=0,
        errored=0,
        pass_rate=None,
        results=[],
        regressions=[],
        regression_override=None,
        requested_by=requested_by,
        started_at=deps.clock.now(),
        finished_at=None,
        error=None,
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
        action="validation.started",
        prompt=name,
        version=version_name,
        details={"run": run.id, "cases": total},
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
) -> RunView:
    """Record a run's case results; errored cases (``error`` set) never count as passed."""
    prompt, version, run = await _get_run(session, run_id)
    if run.state != RunState.RUNNING.value:
        raise GateRefused(f"validation run {run_id} is already {run.state}")
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
    await outbox.enqueue(
        session,
        deps.clock,
        "validation.finished",
        {
            "prompt": prompt.name,
            "version": version.version,
            "run": registry.run_view(run).model_dump(mode="json"),
        },
        channel=deps.policy.channel,
        thread_key=f"{prompt.name}@{version.version}",
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


async def stop_run(
    session: AsyncSession, deps: Deps, run_id: int, actor: str, state: RunState, why: str
) -> RunView:
    """Cancel a run, or mark it interrupted (a crash); the version goes back to draft."""
    prompt, version, run = await _get_run(session, run_id)
    if run.state != RunState.RUNNING.value:
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
            state="passed" if passed else "failed", finished_at=deps.clock.now(), failure=failure
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
