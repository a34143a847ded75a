"""What validation runs and soaks found, as the gates see it: recorded here, judged in the
domain.

The runner (validation) and the soak scheduler write their results through these
functions, which then re-evaluate the open promotion requests of the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import SYSTEM, Actor
from promptship.domain.lifecycle import RequestState, RunState
from promptship.errors import BadInput, Conflict, Forbidden, GateRefused, NotFound
from promptship.services import (
    audit,
    drift,
    identities,
    lifecycle,
    outbox,
    parties,
    registry,
    requests,
    runs,
)
from promptship.services.deps import Deps, request_code
from promptship.services.views import RunView
from promptship.store.models import (
    PromotionRequest,
    Prompt,
    PromptVersion,
    SoakRun,
    ValidationRun,
)


def check_override(deps: Deps, actor: Actor, roles: frozenset[str], label: str) -> None:
    """Accepting regressions is a decision: an authenticated approver's only."""
    identities.check_decider(deps.policy, actor, f"override the regressions of {label}")
    if actor.is_person and "approvers" not in roles:
        raise Forbidden(
            f"only approvers can override the regressions of {label}",
            hint="ask an approver (roles.approvers in the policy file), or fix the regressions",
        )


async def check_impartial_override(
    session: AsyncSession, deps: Deps, actor: Actor, prompt: Prompt, version: PromptVersion
) -> None:
    """Accepting regressions lets the version move, so the person rules of an approval
    apply: never the author, nor the requester of an open request of the version, nor
    whoever pushed or asked on their behalf."""
    await parties.check_impartial(
        session,
        deps,
        actor.id,
        prompt,
        version,
        await parties.open_requests(session, version),
        "override its regressions",
    )


async def run_to_override(
    session: AsyncSession,
    prompt: Prompt,
    version: PromptVersion,
    run_id: int | None,
    tests_of: str,
    seen: str,
    give: str,
) -> ValidationRun | None:
    """The run an override lands on: the version's latest, which must be ``run_id`` (the
    run the approver weighed; Conflict when a later run replaced it, so regressions of a
    re-run are never accepted unseen). ``run_id`` may be left out only while the version
    has a single finished run (nothing to confuse it with). ``tests_of`` names what was
    tested ("req-3"), ``seen`` where the approver saw the run, ``give`` where its id is."""
    run = await registry.latest_run(session, version)
    if run is None:
        return None
    if run_id is None and await _finished_runs(session, version) > 1:
        raise BadInput(
            f"say which run's regressions you accept: the tests of {tests_of} ran more than once",
            hint=f"give run_id ({give}, now {run.id})",
        )
    if run_id is not None and run.id != run_id:
        raise Conflict(
            f"the tests of {tests_of} ran again since {seen} (run {run_id}); "
            f"run {run.id} is the one that counts now, with {len(run.regressions)} "
            "regression(s)",
            hint=f"look at it again before overriding: /prompt show {prompt.name} "
            f"{version.version}",
        )
    return run


async def _finished_runs(session: AsyncSession, version: PromptVersion) -> int:
    """How many finished runs the version's content has had."""
    return (
        await session.execute(
            select(func.count())
            .select_from(ValidationRun)
            .where(
                ValidationRun.version_id == version.id,
                ValidationRun.content_hash == version.content_hash,
                ValidationRun.state.in_((RunState.PASSED.value, RunState.FAILED.value)),
            )
        )
    ).scalar_one()


async def override_regressions(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str,
    reason: str,
    actor: Actor,
    roles: frozenset[str],
    run_id: int | None = None,
) -> RunView:
    """Accept the listed regressions of the version's run ``run_id``, with a recorded
    reason; approvers only. Refused when a later run replaced it; ``run_id`` may be left
    out while the version has a single finished run."""
    check_override(deps, actor, roles, f"{name} {version_name}")
    if not reason.strip():
        raise BadInput("overriding regressions needs a reason")
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    label = lifecycle.label(prompt, version)
    run = await run_to_override(
        session,
        prompt,
        version,
        run_id,
        label,
        "the run you named",
        f"promptship show {name} {version_name} shows its latest run",
    )
    return await accept_regressions(session, deps, prompt, version, reason, actor, run)


async def accept_regressions(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    reason: str,
    actor: Actor,
    run: ValidationRun | None = None,
) -> RunView:
    """Record the override on ``run`` (by default the version's latest; the caller checked
    the role and holds the prompt lock; no party to the version or its open requests may),
    then promote any open request it held back."""
    await check_impartial_override(session, deps, actor, prompt, version)
    label = lifecycle.label(prompt, version)
    if run is None:
        run = await registry.latest_run(session, version)
    if run is None or not run.regressions:
        raise GateRefused(f"{label} has no regressions to override")
    run.regression_override = f"{reason.strip()} (by {actor.id})"
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        actor,
        action=audit.RUN_OVERRIDDEN,
        prompt=prompt.name,
        version=version.version,
        details={"run": run.id, "regressions": list(run.regressions), "reason": reason.strip()},
    )
    await requests.reevaluate(session, deps, prompt, version, actor)
    return registry.run_view(run)


async def finish_run(
    session: AsyncSession,
    deps: Deps,
    run_id: int,
    results: Sequence[dict[str, Any]],
    actor: Actor,
    regressions: Sequence[str] = (),
    regression_override: str | None = None,
    error: str | None = None,
    owner: str | None = None,
    roles: frozenset[str] = frozenset(),
    notes: Sequence[str] = (),
) -> RunView:
    """Record a run's case results; errored cases (``error`` set) never count as passed.
    A ``regression_override`` given with the results is an approver's decision too."""
    prompt, version, run = await runs.load_run(session, run_id)
    if regression_override is not None:
        check_override(deps, actor, roles, lifecycle.label(prompt, version))
        await check_impartial_override(session, deps, actor, prompt, version)
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
    run.notes = list(notes) or None
    run.finished_at = deps.clock.now()
    await session.flush()
    await identities.record(
        session,
        deps.clock,
        actor,
        action=audit.RUN_FINISHED,
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
            **({"notes": list(notes)} if notes else {}),
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
    if run.requested_by == drift.DRIFT_ACTOR and run.state == RunState.FAILED.value:
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
    await requests.reevaluate(session, deps, prompt, version, actor)
    await runs.end_testing(session, deps, prompt, version, actor, run)
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


async def finish_soak(
    session: AsyncSession,
    deps: Deps,
    soak_id: int,
    passed: bool,
    actor: Actor,
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
    await identities.record(
        session,
        deps.clock,
        actor,
        action=f"soak.{soak.state}",
        prompt=prompt.name,
        version=version.version,
        environment=soak.environment,
        details={"soak": soak.id, "kind": soak.kind, "failure": failure},
    )
    await requests.reevaluate(session, deps, prompt, version, actor)
    return soak


async def recover_stale(session: AsyncSession, deps: Deps) -> list[int]:
    """Runs whose worker died: re-queued for another worker the first time, failed with a
    clear reason after :data:`runs.MAX_ATTEMPTS` starts; the requests waiting on each are
    told (re-queued) or closed as failed. Returns the runs recovered."""
    recovered = []
    for run_id in await runs.stale_run_ids(session, deps):
        prompt, version, run = await runs.load_run(session, run_id)
        if not runs.is_stale(deps, run):
            continue  # another replica recovered it, or its worker reported meanwhile
        if run.attempts < runs.MAX_ATTEMPTS:
            await runs.requeue(session, deps, prompt, version, run, "its worker stopped reporting")
            await requests.reevaluate(session, deps, prompt, version, SYSTEM)
        else:
            why = (
                "the run was interrupted twice (the worker stopped); "
                f"run it again with /prompt test {prompt.name} {version.version}"
            )
            await runs.interrupt(session, deps, prompt, version, run, why)
            await requests.reevaluate(session, deps, prompt, version, SYSTEM, why)
        recovered.append(run_id)
    return recovered


async def hand_back(session: AsyncSession, deps: Deps, run_id: int, owner: str) -> RunView:
    """A worker shutting down hands its run back: queued again, from its first case, for
    the next worker (another replica, or this one after the restart), and the requests
    waiting on it are told. A planned shutdown is not a crash: it never fails the run, however
    often it happens."""
    prompt, version, run = await runs.load_run(session, run_id)
    if run.state != RunState.RUNNING.value or run.owner != owner:
        return registry.run_view(run)  # finished, cancelled or taken over meanwhile
    view = await runs.requeue(
        session, deps, prompt, version, run, "the server shut down during the run"
    )
    await requests.reevaluate(session, deps, prompt, version, SYSTEM)
    return view
