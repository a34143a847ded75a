"""Soaks through the services, on both stores: claims keyed (soak, cycle) run each cycle
once, results decide the soak, the soak decides the request, break-glass reverts itself,
the drift watch runs once per tick. Time is a ManualClock; cycles are fed results here and
run for real (model double, MiniLM) in tests/test_soak_engine.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from promptship.clock import ManualClock
from promptship.errors import GateRefused, PromptshipError
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult, CycleSpec, Sample
from promptship.store.db import Database
from tests.conftest import make_policy
from tests.helpers import REQUESTER, pass_tests, push, slack, to_staging

NAME = "customer-support"
SOAK_POLICY = """
environments:
  production: {approvals: 2, soak: 3s, soak_interval: 1s, soak_sample: 50, max_divergence: 0.1}
breakglass: {approvals: 3, production_soak: 2s}
"""
LEASE = timedelta(seconds=30)


@pytest.fixture
def soak_core(db: Database, clock: ManualClock) -> Promptship:
    return Promptship(db, make_policy(SOAK_POLICY), clock)


async def soaked_to_production(core: Promptship, version: str = "1.0.0") -> None:
    """Staging, a clean soak (cycles fed by hand), two approvals: production."""
    await to_staging(core, version=version)
    soak_id = await core.staging_soak_id(NAME, version)
    assert soak_id is not None
    clock = core.clock
    assert isinstance(clock, ManualClock)
    for cycle in (1, 2, 3):
        clock.advance(timedelta(seconds=1))
        await run(core, soak_id, cycle, clean())
    request = await core.request_promotion(NAME, version, "production", slack(REQUESTER))
    await core.approve(request.id, slack("U01"))
    outcome = await core.approve(request.id, slack("U02"))
    assert outcome.request.state == "promoted", outcome.request.checks


async def staged_with_production(core: Promptship) -> int:
    """1.0.0 in production, 1.1.0 entering staging: returns the staging soak's id."""
    await push(core, version="1.0.0")
    await soaked_to_production(core, "1.0.0")
    await push(core, version="1.1.0", system_prompt="Be brief.")
    await to_staging(core, version="1.1.0")
    soak_id = await core.staging_soak_id(NAME, "1.1.0")
    assert soak_id is not None
    return soak_id


async def run(
    core: Promptship, soak_id: int, cycle: int, result: CycleResult, owner: str = "r1"
) -> str | None:
    assert await core.claim_soak_cycle(soak_id, cycle, owner, LEASE)
    spec = await core.soak_cycle_spec(soak_id, cycle)
    return await core.finish_soak_cycle(spec, owner, result)


def clean(n: int = 40) -> CycleResult:
    return CycleResult(sample_size=n, divergent=1, model_calls=n)


async def traffic(core: Promptship, n: int = 40, output: bool = False) -> None:
    await core.ingest_traffic(
        [
            {
                "prompt": NAME,
                "environment": "production",
                "input": f"question {i}",
                **({"output": f"answer {i}", "version": "1.0.0"} if output else {}),
            }
            for i in range(n)
        ]
    )


async def read_all(core: Promptship, spec: CycleSpec, size: int = 7) -> list[Sample]:
    """Every sample of the cycle, read the way the cycle reads them (in small pages here)."""
    return [s async for page in core.soak_sample_pages(spec, size) for s in page]


async def test_the_soak_has_its_cycles_on_a_fixed_schedule(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    [plan] = await soak_core.running_soaks()
    assert (plan.soak_id, plan.cycles) == (soak_id, 3)
    assert plan.due_cycle(clock.now()) == 0
    clock.advance(timedelta(seconds=1.5))
    assert plan.due_cycle(clock.now()) == 1
    assert (await soak_core.soak_status(NAME))[0].next_at == plan.due_at(2)
    clock.advance(timedelta(seconds=10))
    assert plan.due_cycle(clock.now()) == 3  # never past the last; the end does not move
    assert plan.due_at(3) == plan.ends_at
    view = (await soak_core.soak_status(NAME))[0]
    assert (view.state, view.cycles_done, view.cycles_total) == ("running", 0, 3)
    assert view.next_at is None  # every cycle is due: none comes later


async def test_a_cycle_is_claimed_once_and_taken_over_when_its_lease_runs_out(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    claims = await asyncio.gather(
        *(soak_core.claim_soak_cycle(soak_id, 1, f"r{i}", LEASE) for i in range(10))
    )
    assert claims.count(True) == 1
    assert not await soak_core.claim_soak_cycle(soak_id, 1, "late", LEASE)
    clock.advance(LEASE + timedelta(seconds=1))  # the owner died mid-cycle
    assert await soak_core.claim_soak_cycle(soak_id, 1, "survivor", LEASE)
    spec = await soak_core.soak_cycle_spec(soak_id, 1)
    await traffic(soak_core)
    assert await soak_core.finish_soak_cycle(spec, "survivor", clean()) == "passed"
    # the dead owner's late result, and any retried tick, change nothing
    assert await soak_core.finish_soak_cycle(spec, "r0", clean()) is None
    [cycle] = await soak_core.soak_cycles(soak_id)
    assert (cycle["owner"], cycle["attempts"], cycle["state"]) == ("survivor", 2, "passed")


async def test_a_cycle_whose_replica_keeps_dying_is_recorded_as_errored_and_fails_the_soak(
    soak_core: Promptship, clock: ManualClock
) -> None:
    """Every start of a cycle repeats its model calls: after the third start that never
    finished, nobody starts it again; the soak fails and says why."""
    soak_id = await staged_with_production(soak_core)
    request = await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    clock.advance(timedelta(seconds=1))
    for owner in ("r1", "r2", "r3"):
        assert await soak_core.claim_soak_cycle(soak_id, 1, owner, LEASE)
        clock.advance(LEASE + timedelta(seconds=1))  # it died mid-cycle
    assert not await soak_core.claim_soak_cycle(soak_id, 1, "r4", LEASE)
    [cycle] = await soak_core.soak_cycles(soak_id)
    assert (cycle["state"], cycle["attempts"]) == ("errored", 3)
    [soak] = [s for s in await soak_core.soak_status(NAME) if s.id == soak_id]
    assert soak.state == "failed"
    assert "cycle 1: gave up after 3 attempts: the replica running it stopped each time" in (
        soak.failure or ""
    )
    assert (await soak_core.request(request.id)).state == "failed"
    [alert] = [d for d in await due(soak_core) if d.topic == "soak.failed"]
    assert "gave up after 3 attempts" in alert.payload["failure"]
    assert not await soak_core.running_soaks()


async def test_a_passing_soak_ticks_the_gate_and_the_request_promotes(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    request = await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    await soak_core.approve(request.id, slack("U01"))
    await soak_core.approve(request.id, slack("U02"))
    assert (await soak_core.request(request.id)).state == "open"  # soak still running
    for cycle in (1, 2, 3):
        clock.advance(timedelta(seconds=1))
        assert await run(soak_core, soak_id, cycle, clean()) == "passed"
    final = await soak_core.request(request.id)
    assert final.state == "promoted"
    soak = (await soak_core.soak_status(NAME))[0]  # newest first
    assert (soak.state, soak.cycles_done) == ("passed", 3)
    assert soak.worst_divergence == pytest.approx(1 / 40)


async def test_a_divergent_cycle_fails_the_soak_alerts_and_blocks_production(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    request = await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    worst = [{"input": "q", "candidate": "no", "baseline": "yes", "similarity": 0.2}]
    clock.advance(timedelta(seconds=1))
    state = await run(soak_core, soak_id, 1, CycleResult(sample_size=40, divergent=12, worst=worst))
    assert state == "diverged"
    soak = (await soak_core.soak_status(NAME))[0]  # newest first
    assert soak.state == "failed" and "12 of 40 answers diverged (30%, limit 10%)" in (
        soak.failure or ""
    )
    closed = await soak_core.request(request.id)
    assert closed.state == "failed" and "staging soak failed" in (closed.close_reason or "")
    with pytest.raises(GateRefused, match="staging soak failed"):
        await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    alerts = [d for d in await due(soak_core) if d.topic == "soak.failed"]
    assert len(alerts) == 1 and alerts[0].payload["worst"] == worst
    assert alerts[0].payload["soak_id"] == soak_id  # the Slack alert links to its chart


async def test_too_little_traffic_is_a_visible_state_never_a_pass(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    for cycle in (1, 2, 3):
        clock.advance(timedelta(seconds=1))
        spec = await claim_spec(soak_core, soak_id, cycle)
        assert spec.sample_size == 0 and await read_all(soak_core, spec) == []
        state = await soak_core.finish_soak_cycle(spec, "r1", CycleResult(sample_size=0))
        assert state == "insufficient"
    soak = (await soak_core.soak_status(NAME))[0]  # newest first
    assert soak.state == "insufficient-traffic"
    assert "not enough traffic: 3 of 3 cycle(s)" in (soak.failure or "")


async def test_logged_production_outputs_are_offered_for_reuse(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    await traffic(soak_core, 30, output=True)
    spec = await claim_spec(soak_core, soak_id, 1)
    assert spec.baseline is not None and spec.baseline.version == "1.0.0"
    assert spec.candidate.version == "1.1.0"
    samples = await read_all(soak_core, spec)
    assert spec.sample_size == len(samples) == 30
    assert all(s.output and s.version == "1.0.0" for s in samples)


async def test_with_nothing_in_production_the_suite_is_replayed(
    soak_core: Promptship, clock: ManualClock
) -> None:
    await push(soak_core)
    await to_staging(soak_core)
    soak_id = await soak_core.staging_soak_id(NAME, "1.0.0")
    assert soak_id is not None
    spec = await claim_spec(soak_core, soak_id, 1)
    assert spec.baseline is None
    assert [s.input for s in spec.samples] == ["What is prompt versioning?", "How do I roll back?"]
    state = await soak_core.finish_soak_cycle(spec, "r1", CycleResult(sample_size=2, errored=1))
    assert state == "errored"
    soak = (await soak_core.soak_status(NAME))[0]  # newest first
    assert soak.state == "failed" and "1 sample(s) errored" in (soak.failure or "")


async def test_a_divergent_breakglass_version_is_reverted_by_the_system(
    soak_core: Promptship, clock: ManualClock
) -> None:
    await push(soak_core, version="1.0.0")
    await soaked_to_production(soak_core, "1.0.0")
    await push(soak_core, version="1.0.1", system_prompt="Hotfix.")
    await pass_tests(soak_core, NAME, "1.0.1")
    request = await soak_core.breakglass(NAME, "1.0.1", slack(REQUESTER), "refunds leak PII")
    for approver in ("U01", "U02", "U06"):
        await soak_core.approve(request.id, slack(approver))
    [soak] = [s for s in await soak_core.soak_status(NAME) if s.kind == "breakglass-production"]
    await traffic(soak_core, 30)
    clock.advance(timedelta(seconds=1))
    state = await run(soak_core, soak.id, 1, CycleResult(sample_size=30, divergent=9))
    assert state == "diverged"
    status = (await soak_core.status(NAME))[0]
    live = {d.environment: d.version for d in status.environments}
    assert live["production"] == "1.0.0"
    assert (await soak_core.show(NAME, "1.0.1")).status == "reverted"
    events = (await soak_core.history(NAME)).events
    reverted = [
        e for e in events if e.action == "deployment.changed" and e.details["to"] == "1.0.0"
    ]
    assert reverted[0].actor == "promptship"
    assert "break-glass soak failed" in reverted[0].details["reason"]
    alerts = [d for d in await due(soak_core) if d.topic == "soak.failed"]
    assert alerts[0].payload["oncall"] == ["U03"]


async def breakglassed(core: Promptship, production: str, hotfix: str) -> int:
    """``production`` soaked into production, then ``hotfix`` break-glassed over it:
    returns the break-glass soak's id."""
    await push(core, version=production)
    await soaked_to_production(core, production)
    await push(core, version=hotfix, system_prompt="Hotfix.")
    await pass_tests(core, NAME, hotfix)
    request = await core.breakglass(NAME, hotfix, slack(REQUESTER), "refunds leak PII")
    for approver in ("U01", "U02", "U06"):
        await core.approve(request.id, slack(approver))
    [soak] = [s for s in await core.soak_status(NAME) if s.kind == "breakglass-production"]
    return soak.id


async def live(core: Promptship) -> dict[str, str]:
    status = (await core.status(NAME))[0]
    return {d.environment: d.version for d in status.environments}


async def test_a_divergent_breakglass_numbered_below_production_is_reverted_all_the_same(
    soak_core: Promptship, clock: ManualClock
) -> None:
    """An emergency fix on an older line (1.9.1 over 2.0.0) sorts below the version it
    replaced: going back to that version undoes the emergency, so it is allowed."""
    soak_id = await breakglassed(soak_core, "2.0.0", "1.9.1")
    await traffic(soak_core, 30)
    clock.advance(timedelta(seconds=1))
    assert await run(soak_core, soak_id, 1, CycleResult(sample_size=30, divergent=9)) == "diverged"
    assert (await live(soak_core))["production"] == "2.0.0"
    assert (await soak_core.show(NAME, "1.9.1")).status == "reverted"
    [soak] = [s for s in await soak_core.soak_status(NAME) if s.id == soak_id]
    assert soak.state == "failed"
    [alert] = [d for d in await due(soak_core) if d.topic == "soak.failed"]
    assert alert.payload["not_reverted"] is None


async def test_oncall_rolls_back_a_breakglass_numbered_below_production(
    soak_core: Promptship,
) -> None:
    await breakglassed(soak_core, "2.0.0", "2.0.0-hotfix.1")  # a pre-release sorts below
    rolled = await soak_core.rollback(NAME, "production", slack("U03"))  # the default target
    assert (rolled.from_version, rolled.to_version) == ("2.0.0-hotfix.1", "2.0.0")
    assert (await live(soak_core))["production"] == "2.0.0"
    # anything else still only goes back
    with pytest.raises(GateRefused, match="2.0.0-hotfix.1 was rolled back"):
        await soak_core.rollback(NAME, "production", slack("U03"), "2.0.0-hotfix.1")


async def test_a_refused_automatic_revert_still_fails_the_soak_and_tells_oncall_why(
    soak_core: Promptship, clock: ManualClock
) -> None:
    from bot.blocks import messages

    soak_id = await breakglassed(soak_core, "1.0.0", "1.0.1")
    await push(soak_core, version="1.1.0", system_prompt="Be brief.")
    await to_staging(soak_core, version="1.1.0")  # staging moves on: 1.0.0 runs nowhere else
    await soak_core.archive(NAME, "1.0.0", slack("U01"))  # retired for good: no target now
    await traffic(soak_core, 30)
    clock.advance(timedelta(seconds=1))
    assert await run(soak_core, soak_id, 1, CycleResult(sample_size=30, divergent=9)) == "diverged"
    [cycle] = await soak_core.soak_cycles(soak_id)
    assert cycle["state"] == "diverged"  # recorded: nobody runs the cycle again
    [soak] = [s for s in await soak_core.soak_status(NAME) if s.id == soak_id]
    assert soak.state == "failed" and "revert to 1.0.0 did not happen: " in (soak.failure or "")
    assert (await live(soak_core))["production"] == "1.0.1"
    [alert] = [d for d in await due(soak_core) if d.topic == "soak.failed"]
    assert "1.0.0 is archived" in alert.payload["not_reverted"]
    assert alert.payload["oncall"] == ["U03"]
    shown = messages.soak_result_message(alert.payload)
    assert "it still serves production: the automatic revert did not happen" in str(shown.blocks)
    assert "/prompt rollback customer-support production 1.0.0" in str(shown.blocks)


async def test_the_drift_watch_runs_once_per_tick(soak_core: Promptship) -> None:
    await push(soak_core)
    await soaked_to_production(soak_core)
    first, second = await asyncio.gather(
        soak_core.start_drift_watch("drift:2026-11-25T03:00:00+00:00", "r1"),
        soak_core.start_drift_watch("drift:2026-11-25T03:00:00+00:00", "r2"),
    )
    assert sorted([len(first), len(second)]) == [0, 1]
    [queued] = first or second
    assert queued.state == "queued" and queued.total == 2


async def test_a_drift_run_under_the_gate_alerts(soak_core: Promptship) -> None:
    from promptship.services.drift import DRIFT
    from tests.helpers import case_results

    await push(soak_core)
    await soaked_to_production(soak_core)
    [queued] = await soak_core.start_drift_watch("drift:1", "r1")
    assert await soak_core.claim_validation_run("r1", queued.id) == queued.id
    await soak_core.finish_validation_run(queued.id, case_results(1, 9), DRIFT, owner="r1")
    alerts = [d for d in await due(soak_core) if d.topic == "drift.alert"]
    assert len(alerts) == 1 and alerts[0].payload["run"]["pass_rate"] == pytest.approx(0.1)


async def test_traffic_batches_are_checked_whole(soak_core: Promptship) -> None:
    await push(soak_core)
    good = {"prompt": NAME, "environment": "production", "input": "hi"}
    assert (await soak_core.ingest_traffic([good] * 3)).stored == 3
    cases = [
        ([{**good, "input": "x" * 40_000}], "sample 1: input is 40,000 characters; the limit"),
        ([good, {**good, "environment": "prod"}], "unknown environment 'prod'"),
        ([{**good, "prompt": "nope"}], "no prompt named 'nope'"),
        ([{**good, "colour": 1}], "sample 1: unknown key(s) colour"),
        ([{**good, "at": "yesterday"}], "at must be an ISO 8601 time"),
        ([good, {**good, "vars": ["Ada"]}], "sample 2: vars: must be a mapping of variable"),
        ([{**good, "vars": {"first-name": "Ada"}}], "vars: 'first-name' is not a variable name"),
        (
            [{**good, "vars": {"context": "x" * 100_000}}],
            "sample 1: vars: 100,015 characters of values; the limit is 100,000",
        ),
        ([{**good, "version": "1." * 100}], "version must be text of at most 128 characters"),
        ([good] * 1001, "1,001 samples in one batch; the limit is 1,000"),
    ]
    for batch, message in cases:
        with pytest.raises(PromptshipError) as refused:
            await soak_core.ingest_traffic(batch)
        assert message in str(refused.value), str(refused.value)
    # nothing of a refused batch was stored
    assert (await soak_core.ingest_traffic([good])).stored == 1


async def claim_spec(core: Promptship, soak_id: int, cycle: int) -> CycleSpec:
    assert await core.claim_soak_cycle(soak_id, cycle, "r1", LEASE)
    return await core.soak_cycle_spec(soak_id, cycle)


async def due(core: Promptship) -> list:  # type: ignore[type-arg]
    channel = core.policy.channel or ""
    return await core.due_notifications(channel, limit=200)


async def test_a_new_staging_version_restarts_the_soak(
    soak_core: Promptship, clock: ManualClock
) -> None:
    first = await staged_with_production(soak_core)
    clock.advance(timedelta(seconds=1))
    await run(soak_core, first, 1, clean())
    await push(soak_core, version="1.2.0", system_prompt="Be kind.")
    await to_staging(soak_core, version="1.2.0")
    second = await soak_core.staging_soak_id(NAME, "1.2.0")
    views = {s.id: s for s in await soak_core.soak_status(NAME)}
    assert views[first].state == "cancelled" and "replaced in staging by 1.2.0" in (
        views[first].failure or ""
    )
    assert second is not None and views[second].state == "running"
    assert [p.soak_id for p in await soak_core.running_soaks()] == [second]


async def test_retention_keeps_the_newest_samples_within_the_age_limit(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("traffic: {max_samples: 5, max_age: 2d}"), clock)
    await push(core)
    old = (clock.now() - timedelta(days=3)).isoformat()
    sample = {"prompt": NAME, "environment": "production"}
    result = await core.ingest_traffic(
        [{**sample, "input": "ancient", "at": old}]
        + [{**sample, "input": f"q{i}"} for i in range(7)]
        + [{**sample, "environment": "staging", "input": "s"}]
    )
    assert (result.stored, result.pruned) == (9, 3)  # the 3-day-old one and the 2 oldest
    async with db.reader() as session:
        from sqlalchemy import select

        from promptship.store.models import TrafficSample

        kept = (await session.scalars(select(TrafficSample.input))).all()
    assert sorted(kept) == ["q2", "q3", "q4", "q5", "q6", "s"]


async def test_a_cycle_reads_its_window_newest_first_in_pages_that_hold_still(
    soak_core: Promptship, clock: ManualClock
) -> None:
    """The window is fixed when the cycle begins: the newest ``soak_sample`` (50) queries,
    read newest first, a page at a time, none twice even where many share a timestamp, and
    none logged after the cycle began."""
    soak_id = await staged_with_production(soak_core)
    await traffic(soak_core, 40)  # all logged at one instant
    clock.advance(timedelta(seconds=1))
    await soak_core.ingest_traffic(
        [{"prompt": NAME, "environment": "production", "input": f"late {i}"} for i in range(20)]
    )
    spec = await claim_spec(soak_core, soak_id, 1)
    await traffic(soak_core, 5)  # after the cycle began: not in its window
    samples = await read_all(soak_core, spec, size=7)
    assert spec.sample_size == len(samples) == 50
    inputs = [s.input for s in samples]
    assert len(set(inputs)) == 50
    assert inputs[:20] == [f"late {i}" for i in reversed(range(20))]  # newest first
    assert inputs[20:] == [f"question {i}" for i in reversed(range(10, 40))]
    assert [s.input for s in await read_all(soak_core, spec, size=500)] == inputs
