"""A replica that dies mid-cycle: the cycle is taken over once its lease runs out, the soak
completes with every cycle recorded once, and its end time does not move.

Time is the project's clock: a soak's cycles fall due by ``Clock.now()``, so each test
starts its soak at an instant it chose and moves the clock to the next due time; no outcome
depends on how fast the machine is. The first test kills a real ``promptship serve``
(``kill -9``) and restarts one; the soak started an interval before, so only cycle 1 is due
while those servers run (cycle 2 is ten minutes of real time away), and the rest of the soak
runs on a manual clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from promptship.clock import Clock, ManualClock
from promptship.config import Policy
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult, CycleSpec
from promptship.soak.cycle import run_cycle
from promptship.soak.scheduler import Scheduler
from promptship.store.db import Database
from promptship.testing.model_double import ModelDouble
from promptship.testing.serve import ServeProcess
from promptship.validation.scoring import Scorer
from tests.conftest import make_policy
from tests.helpers import start_staging_soak

T = TypeVar("T")


def core_call(
    db_url: str,
    policy: Policy,
    use: Callable[[Promptship], Awaitable[T]],
    clock: Clock | None = None,
) -> T:
    """``use(core)`` on a core of its own over ``db_url``, from a synchronous test whose
    servers run in processes of their own."""

    async def go() -> T:
        db = Database(db_url)
        try:
            return await use(Promptship(db, policy, clock))
        finally:
            await db.dispose()

    return asyncio.run(go())


NAME = "customer-support"
POLICY = """
environments:
  production: {approvals: 2, soak: 30m, soak_interval: 10m, soak_sample: 50}
"""
INTERVAL = timedelta(minutes=10)
LEASE = timedelta(seconds=2)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    with ModelDouble() as double:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", double.url)
        yield double


def cycles_of(rows: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    return [(c["cycle"], c["state"], c["attempts"]) for c in rows]


async def settled(core: Promptship, soak_id: int, cycles: list[tuple[int, str, int]]) -> None:
    """Wait until the soak's cycles are exactly ``cycles`` (a cycle runs in its own task)."""
    async with asyncio.timeout(60):
        while cycles_of(await core.soak_cycles(soak_id)) != cycles:
            await asyncio.sleep(0.05)


@pytest.mark.slow
def test_a_server_killed_mid_cycle_is_taken_over_and_the_soak_completes(
    tmp_path: Path, model: ModelDouble, scorer: Scorer
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'soak.db'}"
    (tmp_path / "promptship.yaml").write_text(POLICY)
    env = {
        "PROMPTSHIP_DATABASE_URL": db_url,
        "PROMPTSHIP_CONFIG": str(tmp_path / "promptship.yaml"),
        "PROMPTSHIP_SCHEDULER_TICK": "0.2",
        "PROMPTSHIP_CLAIM_LEASE": str(int(LEASE.total_seconds())),
    }
    policy = make_policy(POLICY)

    def call(use: Callable[[Promptship], Awaitable[T]], clock: Clock | None = None) -> T:
        return core_call(db_url, policy, use, clock)

    model.latency = 600.0  # the first server's cycle is still calling the model when it dies
    first = ServeProcess(env, tmp_path / "serve.log")
    try:
        soak_id = call(start_staging_soak, ManualClock(datetime.now(UTC) - INTERVAL))
        deadline = time.monotonic() + 60
        while model.request_count == 0:
            assert time.monotonic() < deadline, "the first cycle never called the model"
            time.sleep(0.05)
        [claimed] = call(lambda c: c.soak_cycles(soak_id))
        assert (claimed["cycle"], claimed["state"], claimed["attempts"]) == (1, "claimed", 1)
    finally:
        first.kill()
    killed_at = datetime.now(UTC)

    model.latency = 0.0
    second = ServeProcess(env, tmp_path / "serve.log")  # the dead one's SQLite lock is stale
    try:
        deadline = time.monotonic() + 60
        while call(lambda c: c.soak_cycles(soak_id))[0]["state"] == "claimed":
            assert time.monotonic() < deadline, "the restarted server never took cycle 1 over"
            time.sleep(0.1)
    finally:
        second.stop()
    [taken] = call(lambda c: c.soak_cycles(soak_id))
    assert (taken["state"], taken["attempts"]) == ("passed", 2)  # taken over once
    assert taken["owner"] != claimed["owner"]
    takeover = (taken["finished_at"] - killed_at).total_seconds()
    print(f"cycle 1 taken over and finished {takeover:.1f} s after the kill (lease 2 s)")

    # the rest of the soak, each cycle at its due time on the clock
    [soak] = call(lambda c: c.soak_status(NAME))
    clock = ManualClock(soak.started_at + 2 * INTERVAL)

    async def rest(core: Promptship) -> None:
        replica = Scheduler(core, lambda spec: run_cycle(spec, scorer), lease=LEASE)
        await replica.reconcile()
        await settled(core, soak_id, [(1, "passed", 2), (2, "passed", 1)])
        clock.advance(INTERVAL)
        await replica.reconcile()
        await settled(core, soak_id, [(1, "passed", 2), (2, "passed", 1), (3, "passed", 1)])
        await replica.stop()

    call(rest, clock)
    [done] = call(lambda c: c.soak_status(NAME))
    assert (done.state, done.cycles_done, done.ends_at) == ("passed", 3, soak.ends_at)


@pytest.mark.slow
def test_a_server_shut_down_mid_cycle_hands_it_to_the_next_at_once_uncounted(
    tmp_path: Path, model: ModelDouble
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'soak.db'}"
    (tmp_path / "promptship.yaml").write_text(POLICY)
    env = {
        "PROMPTSHIP_DATABASE_URL": db_url,
        "PROMPTSHIP_CONFIG": str(tmp_path / "promptship.yaml"),
        "PROMPTSHIP_SCHEDULER_TICK": "0.2",
        "PROMPTSHIP_CLAIM_LEASE": "600",  # longer than this test may wait
    }
    policy = make_policy(POLICY)

    def call(use: Callable[[Promptship], Awaitable[T]], clock: Clock | None = None) -> T:
        return core_call(db_url, policy, use, clock)

    model.latency = 600.0  # the first server's cycle is still calling the model at shutdown
    first = ServeProcess(env, tmp_path / "serve.log")
    try:
        soak_id = call(start_staging_soak, ManualClock(datetime.now(UTC) - INTERVAL))
        deadline = time.monotonic() + 60
        while model.request_count == 0:
            assert time.monotonic() < deadline, "the first cycle never called the model"
            time.sleep(0.05)
    finally:
        first.stop()  # SIGTERM: a planned shutdown, as in a rolling restart
    [handed] = call(lambda c: c.soak_cycles(soak_id))
    assert (handed["state"], handed["attempts"]) == ("claimed", 0)

    model.latency = 0.0
    second = ServeProcess(env, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 60
        while call(lambda c: c.soak_cycles(soak_id))[0]["state"] == "claimed":
            assert time.monotonic() < deadline, "the next server never took cycle 1 over"
            time.sleep(0.1)
    finally:
        second.stop()
    [taken] = call(lambda c: c.soak_cycles(soak_id))
    assert (taken["state"], taken["attempts"]) == ("passed", 1)


async def test_a_replica_back_after_the_soak_ended_takes_over_and_records_the_gap(
    db: Database, clock: ManualClock, model: ModelDouble, scorer: Scorer
) -> None:
    """The same death, with the survivor back only after the soak's end: cycle 1 is taken
    over, cycle 2 (passed over while nothing ran) is recorded missed, never a silent gap,
    and the last cycle ends the soak at its planned time."""
    core = Promptship(db, make_policy(POLICY), clock)
    soak_id = await start_staging_soak(core)
    [plan] = await core.running_soaks()

    async def dies_mid_cycle(spec: CycleSpec) -> CycleResult:
        await asyncio.Event().wait()  # killed before it answers
        raise AssertionError("unreachable")

    clock.advance(INTERVAL)
    first = Scheduler(core, dies_mid_cycle, owner="first", lease=LEASE)
    await first.reconcile()
    await settled(core, soak_id, [(1, "claimed", 1)])
    await first.stop()  # what a kill leaves in the store: the claim, until its lease runs out

    survivor = Scheduler(core, lambda spec: run_cycle(spec, scorer), owner="second", lease=LEASE)
    clock.advance(LEASE - timedelta(seconds=1))
    await survivor.reconcile()
    assert cycles_of(await core.soak_cycles(soak_id)) == [(1, "claimed", 1)]  # still leased

    clock.advance(plan.ends_at + timedelta(seconds=1) - clock.now())
    await survivor.reconcile()  # takes cycle 1 over; cycle 3, due too, waits for it
    await settled(core, soak_id, [(1, "passed", 2)])
    await survivor.reconcile()
    await settled(core, soak_id, [(1, "passed", 2), (2, "missed", 0), (3, "passed", 1)])
    await survivor.stop()
    owners = [c["owner"] for c in await core.soak_cycles(soak_id)]
    assert owners == ["second"] * 3
    [soak] = await core.soak_status(NAME)
    assert (soak.state, soak.cycles_done, soak.ends_at) == ("passed", 2, plan.ends_at)
    assert model.request_count == 4  # cycles 1 and 3 replay the suite's 2 cases; 2 made none


async def test_rolling_restarts_mid_cycle_use_no_attempts_and_the_soak_passes(
    db: Database, clock: ManualClock, model: ModelDouble, scorer: Scorer
) -> None:
    """Replicas shut down (planned) while a cycle runs, more often than a cycle may be
    started: each hands the cycle back, the next replica takes it over at once, without
    waiting out a lease, and the cycle passes on its first counted attempt."""
    core = Promptship(db, make_policy(POLICY), clock)
    soak_id = await start_staging_soak(core)
    started: list[CycleSpec] = []

    async def stopped_mid_cycle(spec: CycleSpec) -> CycleResult:
        started.append(spec)
        await asyncio.Event().wait()  # the shutdown comes before it answers
        raise AssertionError("unreachable")

    clock.advance(INTERVAL)
    for n in range(4):
        replica = Scheduler(core, stopped_mid_cycle, owner=f"restarting-{n}", lease=LEASE)
        await replica.reconcile()
        async with asyncio.timeout(60):
            while len(started) <= n:
                await asyncio.sleep(0.05)
        replica.shutting_down = True  # what the server sets before it stops its workers
        await replica.stop()
        [cycle] = await core.soak_cycles(soak_id)
        assert (cycle["state"], cycle["owner"]) == ("claimed", f"restarting-{n}")

    survivor = Scheduler(core, lambda spec: run_cycle(spec, scorer), owner="last", lease=LEASE)
    await survivor.reconcile()  # the clock has not moved: no lease had to run out
    await settled(core, soak_id, [(1, "passed", 1)])
    await survivor.stop()
    [soak] = await core.soak_status(NAME)
    assert soak.state == "running" and soak.failure is None


REPLICAS_POLICY = """
channel: C0SOAK
environments:
  production: {approvals: 2, soak: 6s, soak_interval: 2s, soak_sample: 50}
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_two_servers_on_postgres_record_each_cycle_once_and_post_once(
    postgres_url: str, tmp_path: Path
) -> None:
    from promptship.testing.serve import DoubleProcess
    from promptship.testing.slack_double import SlackDouble
    from tests.conftest import _truncate
    from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET

    async def reset() -> None:
        db = Database(postgres_url)
        await _truncate(db)
        await db.dispose()

    asyncio.run(reset())
    (tmp_path / "promptship.yaml").write_text(REPLICAS_POLICY)
    policy = make_policy(REPLICAS_POLICY)

    def call(use: Callable[[Promptship], Awaitable[T]]) -> T:
        return core_call(postgres_url, policy, use)

    with (
        DoubleProcess("promptship.testing.model_double", "--latency", "1.0") as model,
        SlackDouble(token=BOT_TOKEN) as slack,
    ):
        env = {
            "PROMPTSHIP_DATABASE_URL": postgres_url,
            "PROMPTSHIP_CONFIG": str(tmp_path / "promptship.yaml"),
            "PROMPTSHIP_SCHEDULER_TICK": "0.2",
            # nobody dies here: a lease a busy machine cannot outrun between two renewals
            # (a 5 s one was taken over once while its holder was starved of CPU)
            "PROMPTSHIP_CLAIM_LEASE": "60",
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": model.url,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
        }
        servers = [ServeProcess(env, tmp_path / f"serve-{i}.log") for i in range(2)]
        try:
            soak_id = call(start_staging_soak)
            deadline = time.monotonic() + 60
            while call(lambda c: c.soak_status(NAME))[0].state == "running":
                assert time.monotonic() < deadline, "the soak never finished"
                time.sleep(0.2)
            deadline = time.monotonic() + 20
            while call(lambda c: c.outbox_backlog()) > 0:
                assert time.monotonic() < deadline, "notifications were not delivered"
                time.sleep(0.2)
            time.sleep(1)  # a duplicate delivery would show by now
        finally:
            for server in servers:
                server.stop()
        cycles = call(lambda c: c.soak_cycles(soak_id))
        assert [(c["cycle"], c["state"], c["attempts"]) for c in cycles] == [
            (1, "passed", 1),
            (2, "passed", 1),
            (3, "passed", 1),
        ]
        posts = [p.get("text", "") for p in slack.calls("chat.postMessage")]
        passed = [p for p in posts if "Soak of customer-support 1.0.0 in staging passed" in p]
        assert len(passed) == 1, posts
        assert len(posts) == len(set(posts)), posts
        assert slack.refused == []
