"""Soak cycles for real: the anthropic client against the model double, the MiniLM scorer,
and the scheduler running cycles on its own (seconds-long soaks from the policy file) on
one replica and on two replicas sharing a store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult, CycleSpec, Sample, Side
from promptship.soak.cycle import run_cycle
from promptship.soak.scheduler import Scheduler
from promptship.store.db import Database
from promptship.testing.model_double import ModelDouble
from promptship.validation.scoring import Scorer
from tests.conftest import make_policy
from tests.helpers import REQUESTER, push, slack, start_staging_soak, to_staging

NAME = "customer-support"
TOPICS = [
    "To reset your password, open Settings, choose Security and press Reset password.",
    "Refunds are paid back to the original card within five working days.",
    "You can export your invoices as PDF from the Billing page.",
    "Our support team answers chat messages between 9:00 and 17:00 CET.",
]


def helpful(system: str, user: str, model: str) -> str:
    last = user.split()[-1]
    return TOPICS[(int(last) if last.isdigit() else len(user)) % len(TOPICS)]


def off_topic(system: str, user: str, model: str) -> str:
    if "pirate" in system:  # the staging prompt went wrong
        return "Arr, the sea be calm and the parrots be singing tonight, matey."
    return helpful(system, user, model)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    with ModelDouble(responder=off_topic) as double:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", double.url)
        yield double


def side(version: str, system: str) -> Side:
    return Side(version, "anthropic", "claude-test", 0.0, 200, system)


def spec(samples: list[Sample], candidate: str = "Be helpful.", baseline: bool = True) -> CycleSpec:
    return CycleSpec(
        soak_id=1,
        cycle=1,
        kind="staging-shadow",
        prompt=NAME,
        candidate=side("1.1.0", candidate),
        baseline=side("1.0.0", "Be helpful.") if baseline else None,
        samples=samples,
        min_samples=5,
        similarity=0.85,
        max_divergence=0.1,
    )


QUERIES = [Sample(f"customer question {i}") for i in range(40)]


async def test_same_answers_do_not_diverge(model: ModelDouble, scorer: Scorer) -> None:
    result = await run_cycle(spec(QUERIES), scorer)
    assert (result.sample_size, result.divergent, result.errored) == (40, 0, 0)
    assert result.model_calls == model.request_count == 80  # both versions, every query


async def test_a_cycle_against_a_rate_limited_model_answers_every_sample(
    model: ModelDouble, scorer: Scorer
) -> None:
    model.rate_limit(40, burst=5)
    result = await run_cycle(spec(QUERIES), scorer)
    assert (result.sample_size, result.divergent, result.errored) == (40, 0, 0)
    assert result.model_calls == 80
    # the first round is refused (16 calls at once, 5 in the bucket: 11 429s), then a few
    # at most while the window settles; fixed at 16, calls here run out of retries
    assert model.rejected <= 20
    assert model.request_count == 80 + model.rejected


async def test_a_prompt_that_answers_differently_diverges(
    model: ModelDouble, scorer: Scorer
) -> None:
    result = await run_cycle(spec(QUERIES, candidate="Talk like a pirate."), scorer)
    assert result.divergent == 40 and result.rate == 1.0
    worst = result.worst[0]
    assert worst["candidate"].startswith("Arr") and worst["similarity"] < 0.85
    assert worst["baseline"] in TOPICS


async def test_logged_production_outputs_halve_the_model_calls(
    model: ModelDouble, scorer: Scorer
) -> None:
    logged = [Sample(s.input, helpful("", s.input, ""), "1.0.0") for s in QUERIES]
    result = await run_cycle(spec(logged), scorer)
    assert result.model_calls == model.request_count == 40  # against 80 without the log
    assert result.divergent == 0
    assert {c["system"] for c in model.requests} == {"Be helpful."}


async def test_with_no_baseline_the_suite_is_replayed_for_errors(
    model: ModelDouble, scorer: Scorer
) -> None:
    model.down = True
    result = await run_cycle(spec(QUERIES[:5], baseline=False), scorer)
    assert (result.errored, result.divergent) == (5, 0)


async def test_too_few_queries_make_no_calls(model: ModelDouble, scorer: Scorer) -> None:
    result = await run_cycle(spec(QUERIES[:3]), scorer)
    assert (result.sample_size, result.model_calls, model.request_count) == (3, 0, 0)


async def test_a_missing_key_is_the_cycle_error(
    model: ModelDouble, scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = await run_cycle(spec(QUERIES), scorer)
    assert result.error and "ANTHROPIC_API_KEY is not set" in result.error


SOAK_POLICY = """
environments:
  production: {approvals: 0, soak: 3s, soak_interval: 1s, soak_sample: 50}
"""


async def wait_until(predicate) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(20):
        while not await predicate():
            await asyncio.sleep(0.1)


async def test_the_scheduler_runs_every_cycle_once_across_two_replicas(
    db: Database, database_url: str, model: ModelDouble, scorer: Scorer
) -> None:
    policy = make_policy(SOAK_POLICY)
    second = Database(database_url)
    replicas = [Promptship(db, policy), Promptship(second, policy)]
    soak_id = await start_staging_soak(replicas[0])
    request = await replicas[0].request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    assert request.state == "open"  # waiting for the soak
    schedulers = [
        Scheduler(
            core,
            lambda s, core=core: run_cycle(s, scorer, pages=core.soak_sample_pages),
            owner=f"replica-{i}",
            lease=timedelta(seconds=5),
            reconcile_every=0.2,
        )
        for i, core in enumerate(replicas)
    ]
    for scheduler in schedulers:
        await scheduler.start()
    try:

        async def soak_done() -> bool:
            return (await replicas[1].soak_status(NAME))[0].state != "running"

        await wait_until(soak_done)
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
        await second.dispose()
    cycles = await replicas[0].soak_cycles(soak_id)
    assert [c["cycle"] for c in cycles] == [1, 2, 3]
    assert all(c["state"] == "passed" and c["attempts"] == 1 for c in cycles)
    [soak] = await replicas[0].soak_status(NAME)
    assert (soak.state, soak.cycles_done) == ("passed", 3)
    assert (await replicas[0].request(request.id)).state == "promoted"
    # suite replay (nothing in production yet): 2 cases a cycle, each called once
    assert model.request_count == 6


async def test_a_diverging_staging_prompt_fails_its_soak_on_its_own(
    db: Database, model: ModelDouble, scorer: Scorer
) -> None:
    core = Promptship(db, make_policy(SOAK_POLICY))
    scheduler = Scheduler(
        core,
        lambda s: run_cycle(s, scorer, pages=core.soak_sample_pages),
        lease=timedelta(seconds=5),
        reconcile_every=0.2,
    )
    await scheduler.start()
    try:
        await start_staging_soak(core)  # 1.0.0: suite replay, then production (no approvals needed)
        await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))

        async def live() -> bool:
            status = (await core.status(NAME))[0]
            return any(d.environment == "production" for d in status.environments)

        await wait_until(live)
        await core.ingest_traffic(
            [
                {"prompt": NAME, "environment": "production", "input": f"customer question {i}"}
                for i in range(30)
            ]
        )
        await push(core, version="1.1.0", system_prompt="Talk like a pirate.")
        await to_staging(core, version="1.1.0")
        request = await core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))

        async def failed() -> bool:
            return (await core.soak_status(NAME))[0].state == "failed"

        await wait_until(failed)
    finally:
        await scheduler.stop()
    soak = (await core.soak_status(NAME))[0]
    assert soak.cycles_done == 1 and "30 of 30 answers diverged (100%" in (soak.failure or "")
    closed = await core.request(request.id)
    assert closed.state == "failed"
    alerts = [
        d
        for d in await core.due_notifications(core.policy.channel or "", limit=200)
        if d.topic == "soak.failed"
    ]
    assert len(alerts) == 1 and alerts[0].payload["worst"][0]["candidate"].startswith("Arr")
    assert (await core.show(NAME, "1.0.0")).status == "production"  # production untouched


async def test_a_cycle_that_keeps_raising_is_tried_three_times_then_fails_the_soak(
    db: Database,
) -> None:
    one_cycle = "environments: {production: {approvals: 0, soak: 2s, soak_interval: 2s}}"
    core = Promptship(db, make_policy(one_cycle))
    attempts = 0

    async def broken(spec: CycleSpec) -> CycleResult:  # e.g. a proxy answering HTML
        nonlocal attempts
        attempts += 1
        raise AttributeError("'str' object has no attribute 'usage'")

    soak_id = await start_staging_soak(core)
    scheduler = Scheduler(core, broken, lease=timedelta(seconds=5), reconcile_every=0.2)
    await scheduler.start()
    try:

        async def decided() -> bool:
            return (await core.soak_status(NAME))[0].state != "running"

        await wait_until(decided)
    finally:
        await scheduler.stop()
    [soak] = await core.soak_status(NAME)
    assert soak.state == "failed"
    assert (
        "cycle 1: gave up after 3 attempts; the last failed: AttributeError: "
        "'str' object has no attribute 'usage'"
    ) in (soak.failure or "")
    [cycle] = await core.soak_cycles(soak_id)
    assert (cycle["state"], cycle["attempts"]) == ("errored", 3)
    assert attempts == 3  # each attempt repeats the cycle's model calls: no fourth
    alerts = [
        d
        for d in await core.due_notifications(core.policy.channel or "", limit=200)
        if d.topic == "soak.failed"
    ]
    assert len(alerts) == 1


async def test_two_schedulers_firing_the_drift_watch_queue_one_run(
    db: Database, database_url: str
) -> None:
    from promptship.soak.scheduler import Scheduler as S

    policy = make_policy("environments: {production: {approvals: 0, soak: 0s}}")
    second = Database(database_url)
    cores = [Promptship(db, policy), Promptship(second, policy)]
    await push(cores[0])
    await to_staging(cores[0])
    await cores[0].request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))

    async def nothing(spec: CycleSpec):  # type: ignore[no-untyped-def]
        raise AssertionError("no soak should run")

    schedulers = [S(core, nothing, owner=f"r{i}") for i, core in enumerate(cores)]
    await asyncio.gather(*(s.drift_watch() for s in schedulers))
    await second.dispose()
    from promptship.services.drift import DRIFT_ACTOR

    runs = (await cores[0].show(NAME, "1.0.0")).latest_run
    assert runs is not None and runs.state == "queued"
    history = (await cores[0].history(NAME)).events
    queued = [e for e in history if e.action == "validation.queued" and e.actor == DRIFT_ACTOR]
    assert len(queued) == 1


async def test_a_stopped_scheduler_leaves_no_job_running(db: Database) -> None:
    """A server stopping while a reconcile reads the store: ``stop`` returns only once that
    job has ended, so nothing of the scheduler's touches the database (or the event loop)
    after the server disposed of them."""
    core = Promptship(db, make_policy(SOAK_POLICY))
    reading = asyncio.Event()

    async def slow_running_soaks() -> list[object]:
        reading.set()
        await asyncio.Event().wait()  # a query still in flight at shutdown
        return []

    core.running_soaks = slow_running_soaks  # type: ignore[method-assign]

    async def nothing(spec: CycleSpec):  # type: ignore[no-untyped-def]
        raise AssertionError("no soak should run")

    scheduler = Scheduler(core, nothing, reconcile_every=3600)
    await scheduler.start()
    async with asyncio.timeout(20):
        await reading.wait()
    await scheduler.stop()
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_new_required_variable_the_traffic_lacks_is_named(
    model: ModelDouble, scorer: Scorer
) -> None:
    candidate = Side(
        "1.1.0",
        "anthropic",
        "claude-test",
        0.0,
        200,
        "Help {{ customer_name }}.",
        [],
        {"customer_name": None},
    )
    with_vars = [Sample(f"q {i}", vars={"customer_name": "Ada"}) for i in range(6)]
    without = [Sample(f"q {i}") for i in range(6, 10)]
    result = await run_cycle(replace(spec(with_vars + without), candidate=candidate), scorer)
    assert (result.sample_size, result.errored) == (10, 4)
    assert result.first_error == (
        "1.1.0 needs customer_name, which the logged query does not carry: log traffic with "
        "its vars (log_traffic(..., vars=...)) or give it a default"
    )
    assert {c["system"] for c in model.requests} == {"Help Ada.", "Be helpful."}
