"""Soaks in the store: their cycles, the claims that make each due cycle run once across
replicas (:mod:`promptship.services.soak_claims`), and what a finished cycle does to the soak,
the request and production.

A soak of length L with interval I has ``ceil(L / I)`` cycles; cycle k is due at
``started_at + k * I`` (the last one at ``ends_at``). Whoever inserts the row
``(soak_id, k)`` runs the cycle, under a lease; a replica that finds the lease run out (or
the cycle freed after it raised) takes the cycle over, up to ``MAX_CYCLE_ATTEMPTS`` starts,
after which the cycle is recorded as errored and the soak fails. The result is
written to that row once (the first finisher wins), so a retried or doubled tick changes
nothing. The end time never moves: after downtime, only the newest due cycle runs (the ones
missed are recorded as such), and the soak still ends at ``ends_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import SYSTEM
from promptship.domain.lifecycle import soak_cycles, soak_next_steps
from promptship.errors import NotFound, PromptshipError
from promptship.services import (
    deployments,
    findings,
    outbox,
    registry,
    rollbacks,
    soak_samples,
)
from promptship.services.deps import Deps
from promptship.services.soak_spec import CycleResult, CycleSpec, Sample, Side
from promptship.store.models import (
    Prompt,
    PromptVersion,
    SoakCycle,
    SoakRun,
)

STAGING_SOAK = deployments.STAGING_SOAK
BREAKGLASS_SOAK = deployments.BREAKGLASS_SOAK
CLAIMED = "claimed"
DONE_STATES = ("passed", "diverged", "insufficient", "errored", "missed")


@dataclass(frozen=True)
class SoakPlan:
    """When a running soak's cycles are due."""

    soak_id: int
    kind: str
    prompt: str
    version: str
    started_at: datetime
    ends_at: datetime
    interval: timedelta
    cycles: int
    #: cycles claimed by a replica whose lease ran out (it died mid-cycle): to take over
    abandoned: tuple[int, ...] = ()

    def due_at(self, cycle: int) -> datetime:
        return min(self.started_at + cycle * self.interval, self.ends_at)

    def due_cycle(self, now: datetime) -> int:
        """The newest cycle due by ``now`` (0: none yet)."""
        if now >= self.ends_at:
            return self.cycles
        return min(self.cycles, int((now - self.started_at) / self.interval))


def _interval(deps: Deps, soak: SoakRun) -> timedelta:
    interval = deps.policy.environments.production_policy.soak_interval
    return interval if interval > timedelta(0) else soak.ends_at - soak.started_at


def plan(deps: Deps, soak: SoakRun, prompt: str, version: str) -> SoakPlan:
    interval = _interval(deps, soak)
    cycles = soak_cycles(soak.ends_at - soak.started_at, interval)
    return SoakPlan(
        soak.id, soak.kind, prompt, version, soak.started_at, soak.ends_at, interval, cycles
    )


async def running_rows(session: AsyncSession) -> list[tuple[SoakRun, str, str]]:
    """The running soaks, oldest first, each with its prompt's name and its version."""
    rows = await session.execute(
        select(SoakRun, Prompt.name, PromptVersion.version)
        .join(PromptVersion, PromptVersion.id == SoakRun.version_id)
        .join(Prompt, Prompt.id == PromptVersion.prompt_id)
        .where(SoakRun.state == "running")
        .order_by(SoakRun.id)
    )
    return [(soak, name, version) for soak, name, version in rows.all()]


async def running(session: AsyncSession, deps: Deps) -> list[SoakPlan]:
    rows = await running_rows(session)
    now = deps.clock.now()
    stale = (
        await session.execute(
            select(SoakCycle.soak_id, SoakCycle.cycle)
            .join(SoakRun, SoakRun.id == SoakCycle.soak_id)
            .where(
                SoakRun.state == "running",
                SoakCycle.state == CLAIMED,
                SoakCycle.lease_until < now,
            )
        )
    ).all()
    abandoned: dict[int, list[int]] = {}
    for soak_id, cycle in stale:
        abandoned.setdefault(soak_id, []).append(cycle)
    return [
        replace(
            plan(deps, soak, name, version), abandoned=tuple(sorted(abandoned.get(soak.id, [])))
        )
        for soak, name, version in rows
    ]


def _side(version: PromptVersion) -> Side:
    return Side(
        version.version,
        version.provider,
        version.model,
        version.temperature,
        version.max_tokens,
        version.system_prompt,
        list(version.content.get("messages") or []),
        version.content.get("variables"),
    )


async def cycle_spec(session: AsyncSession, deps: Deps, soak_id: int, cycle: int) -> CycleSpec:
    soak = await session.get(SoakRun, soak_id)
    if soak is None:
        raise NotFound(f"no soak {soak_id}")
    candidate = await registry.get_version_by_id(session, soak.version_id)
    prompt = await session.get(Prompt, candidate.prompt_id)
    assert prompt is not None
    envs = deps.policy.environments
    policy = envs.production_policy
    baseline: PromptVersion | None = None
    if soak.kind == BREAKGLASS_SOAK:
        if soak.baseline_version_id is not None:
            baseline = await registry.get_version_by_id(session, soak.baseline_version_id)
    else:
        live = await deployments.live_version(session, prompt.id, envs.production)
        baseline = live if live is not None and live.id != candidate.id else None

    traffic = None
    samples: list[Sample] = []
    if baseline is None:
        samples = [
            Sample(c["input"], vars=c.get("vars")) for c in candidate.content.get("tests", [])
        ]
    else:  # the newest logged queries, read a page at a time while the cycle runs
        since = soak.started_at if soak.kind == BREAKGLASS_SOAK else None  # fresh traffic only
        traffic = await soak_samples.window(
            session, prompt.id, envs.production, since, policy.soak_sample
        )
    return CycleSpec(
        soak_id=soak.id,
        cycle=cycle,
        kind=soak.kind,
        prompt=prompt.name,
        candidate=_side(candidate),
        baseline=_side(baseline) if baseline is not None else None,
        samples=samples,
        traffic=traffic,
        # a soak_sample under the floor wins: the cycle can never offer more than that
        min_samples=min(policy.soak_sample, policy.soak_min_samples),
        similarity=policy.divergence_similarity,
        max_divergence=policy.max_divergence,
    )


def _cycle_state(spec: CycleSpec, result: CycleResult) -> str:
    if result.error or (spec.baseline is None and result.errored):
        return "errored"
    if spec.baseline is not None and result.sample_size - result.errored < spec.min_samples:
        return "insufficient"
    rate = result.rate
    if rate is not None and rate > spec.max_divergence:
        return "diverged"
    return "passed"


async def finish(
    session: AsyncSession, deps: Deps, spec: CycleSpec, owner: str, result: CycleResult
) -> str | None:
    """Record a cycle's result under its key (first finisher only) and act on it: fail the
    soak (and revert a break-glass version), or pass it after its last cycle. Returns the
    cycle's state, or None if the cycle had already been recorded."""
    soak = await session.get(SoakRun, spec.soak_id)
    if soak is None:
        raise NotFound(f"no soak {spec.soak_id}")
    version = await registry.get_version_by_id(session, soak.version_id)
    prompt = await registry.lock_prompt(session, version.prompt_id)
    await session.refresh(soak)
    state = _cycle_state(spec, result)
    now = deps.clock.now()
    written = await session.execute(
        update(SoakCycle)
        .where(
            SoakCycle.soak_id == spec.soak_id,
            SoakCycle.cycle == spec.cycle,
            SoakCycle.state == CLAIMED,
        )
        .values(
            state=state,
            owner=owner,
            finished_at=now,
            sample_size=result.sample_size,
            divergent=result.divergent,
            errored=result.errored,
            rate=result.rate,
            model_calls=result.model_calls,
            details={
                "worst": result.worst[:5],
                "error": result.error,
                "calls_seconds": round(result.calls_seconds, 3),
                "scoring_seconds": round(result.scoring_seconds, 3),
            },
        )
    )
    if written.rowcount != 1:  # type: ignore[attr-defined]
        return None
    plan_ = plan(deps, soak, prompt.name, version.version)
    states = await _cycle_states(session, soak.id)
    # cycles passed over while every replica was down are recorded as missed, once
    missed = [c for c in range(1, spec.cycle) if c not in states]
    if missed:
        await session.execute(
            registry.dialect_insert(session)(SoakCycle)
            .values(
                [
                    {
                        "soak_id": soak.id,
                        "cycle": cycle,
                        "state": "missed",
                        "owner": owner,
                        "lease_until": now,
                        "claimed_at": now,
                        "attempts": 0,
                        "finished_at": now,
                        "details": {},
                    }
                    for cycle in missed
                ]
            )
            .on_conflict_do_nothing(index_elements=["soak_id", "cycle"])
        )
        states = await _cycle_states(session, soak.id)  # a replica may have claimed one
    done = sum(1 for st in states.values() if st in DONE_STATES[:4])
    settled = sum(1 for st in states.values() if st in DONE_STATES)
    worst = soak.worst_divergence
    if result.rate is not None:
        worst = result.rate if worst is None else max(worst, result.rate)
    soak.cycles_done = done
    soak.worst_divergence = worst
    soak.details = {**soak.details, "last_cycle": spec.cycle, "cycles": plan_.cycles}
    await session.flush()
    if soak.state != "running":
        return state

    summary = _summary(spec, result)
    if state in ("diverged", "errored"):
        cause = (
            f"cycle {spec.cycle}: {summary}"
            if state == "diverged"
            else f"cycle {spec.cycle}: {result.error or _errored(result)}"
        )
        failure = _advised(soak, cause, prompt.name, version.version, insufficient=False)
        await findings.finish_soak(session, deps, soak.id, False, SYSTEM, failure)
        not_reverted = None
        if soak.kind == BREAKGLASS_SOAK and soak.baseline_version_id is not None:
            baseline = await registry.get_version_by_id(session, soak.baseline_version_id)
            not_reverted = await _auto_revert(session, deps, prompt, version, baseline, failure)
            if not_reverted is not None:  # the soak stays failed; on-call reverts by hand
                failure = (
                    f"{cause}; the automatic revert to {baseline.version} did not happen: "
                    f"{not_reverted}. Next: roll production back by hand: /prompt rollback "
                    f"{prompt.name} {deps.policy.environments.production} {baseline.version}"
                )
                soak.failure = failure
                await session.flush()
        await _alert(
            session,
            deps,
            "soak.failed",
            spec,
            result,
            prompt.name,
            version,
            failure,
            not_reverted=not_reverted,
        )
    elif settled >= plan_.cycles:
        # every cycle is settled (one still running elsewhere keeps the soak open); cycles
        # missed while every replica was down were covered by the next one that ran
        lacking = sum(1 for st in states.values() if st == "insufficient")
        if lacking:
            failure = (
                f"not enough traffic: {lacking} of {plan_.cycles} cycle(s) had fewer than "
                f"{spec.min_samples} production queries"
                + (f" answered; the last cycle: {_errored(result)}" if result.errored else "")
            )
            failure = _advised(soak, failure, prompt.name, version.version, insufficient=True)
            await findings.finish_soak(
                session,
                deps,
                soak.id,
                False,
                SYSTEM,
                failure,
                state="insufficient-traffic",
            )
            await _alert(session, deps, "soak.failed", spec, result, prompt.name, version, failure)
        else:
            await findings.finish_soak(session, deps, soak.id, True, SYSTEM)
            await _alert(session, deps, "soak.passed", spec, result, prompt.name, version, None)
    return state


def _errored(result: CycleResult) -> str:
    first = f" (the first: {result.first_error})" if result.first_error else ""
    return f"{result.errored} sample(s) errored{first}"


def _advised(soak: SoakRun, failure: str, prompt: str, version: str, insufficient: bool) -> str:
    """A soak's failure with what to do next."""
    steps = soak_next_steps(
        prompt, version, insufficient=insufficient, breakglass=soak.kind == BREAKGLASS_SOAK
    )
    return f"{failure}. {steps}"


def _summary(spec: CycleSpec, result: CycleResult) -> str:
    rate = result.rate
    shown = "n/a" if rate is None else f"{rate:.0%}"
    return (
        f"{result.divergent} of {result.sample_size} answers diverged ({shown}, "
        f"limit {spec.max_divergence:.0%})"
    )


async def _auto_revert(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    baseline: PromptVersion,
    failure: str,
) -> str | None:
    """Put production back on ``baseline``, the version the failed break-glass replaced.
    Returns why that was refused (nothing of it is kept then), or None."""
    envs = deps.policy.environments
    pointer = await deployments.active(session, prompt.id, envs.production)
    if pointer is None or pointer.version_id != version.id:
        return None  # production moved on already
    try:
        async with session.begin_nested():
            await rollbacks.rollback(
                session,
                deps,
                prompt.name,
                envs.production,
                SYSTEM,
                frozenset({"oncall"}),
                baseline.version,
                f"break-glass soak failed: {failure}",
            )
    except PromptshipError as refused:
        # the failed soak must still be recorded and on-call told, so the refusal is the
        # alert's, not the cycle's
        return refused.message
    return None


async def _alert(
    session: AsyncSession,
    deps: Deps,
    topic: str,
    spec: CycleSpec,
    result: CycleResult,
    prompt: str,
    version: PromptVersion,
    failure: str | None,
    *,
    not_reverted: str | None = None,
) -> None:
    await outbox.enqueue(
        session,
        deps.clock,
        topic,
        {
            "prompt": prompt,
            "version": version.version,
            "soak_id": spec.soak_id,
            "kind": spec.kind,
            "cycle": spec.cycle,
            "failure": failure,
            "summary": _summary(spec, result),
            "worst": result.worst[:3],
            "oncall": list(deps.policy.roles.oncall),
            # a failed break-glass version that still serves production: why it was not reverted
            "not_reverted": not_reverted,
        },
        channel=deps.policy.channel,
        thread_key=f"{prompt}/{version.version}/soak",
        dedupe_key=f"{topic}:{spec.soak_id}",
    )


async def cycles(session: AsyncSession, soak_id: int) -> list[SoakCycle]:
    return list(
        (
            await session.scalars(
                select(SoakCycle).where(SoakCycle.soak_id == soak_id).order_by(SoakCycle.cycle)
            )
        ).all()
    )


async def _cycle_states(session: AsyncSession, soak_id: int) -> dict[int, str]:
    rows = await session.execute(
        select(SoakCycle.cycle, SoakCycle.state).where(SoakCycle.soak_id == soak_id)
    )
    return {cycle: state for cycle, state in rows.all()}
