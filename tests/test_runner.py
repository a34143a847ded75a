"""The validation gate end to end: a version's suite against the model double over HTTP,
scored by the real MiniLM model, recorded through the core."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bot.dispatcher import render
from promptship.clock import ManualClock
from promptship.domain.lifecycle import RunState
from promptship.errors import Forbidden, GateRefused, Unavailable
from promptship.services import Promptship
from promptship.services.outbox import Delivery
from promptship.testing.model_double import ModelDouble
from promptship.validation.runner import RunnerSettings, SuiteRunner, ValidationWorker
from promptship.validation.scoring import Scorer
from tests.conftest import prompt_yaml
from tests.helpers import AUTHOR, REQUESTER, answering, slack

NAME = "support-bot"

SUITE = [
    {"input": "How many projects on Team?", "expected": "25 projects", "type": "contains"},
    {"input": "Can I get a refund?", "expected": "2 business days", "type": "contains"},
    {"input": "Can I get a refund?", "expected": "guaranteed", "type": "not-contains"},
    {
        "input": "Reply in JSON",
        "expected": {"type": "object", "required": ["ok"]},
        "type": "json-schema",
    },
    {
        "input": "How do I roll back?",
        "expected": "Point production at the previous version of the prompt.",
        "type": "score",
        "threshold": 0.6,
    },
]

GOOD = {
    "How many projects on Team?": "The Team plan includes 25 projects.",
    "Can I get a refund?": "Billing reviews refund requests within 2 business days.",
    "Reply in JSON": '{"ok": true}',
    "How do I roll back?": "Roll back by pointing production at the previous prompt version.",
}


def answer_from(table: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda system, user, model: table.get(user, "I don't know.")


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    with ModelDouble(responder=answer_from(GOOD)) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        yield server


async def push(
    core: Promptship, version: str, tests: list[dict[str, object]] = SUITE, **kw: object
) -> None:
    from promptship.domain.promptfile import parse_prompt

    await core.push(parse_prompt(prompt_yaml(NAME, version, tests=tests, **kw)), slack(AUTHOR))


_opened: list[SuiteRunner] = []


@pytest.fixture(autouse=True)
async def close_runners() -> AsyncIterator[None]:
    """Each runner a test makes is closed after it, with the connections it keeps."""
    yield
    while _opened:
        await _opened.pop().aclose()


def runner(core: Promptship, **settings: float) -> SuiteRunner:
    made = SuiteRunner(core, settings=RunnerSettings(timeout=5, max_retries=3, **settings))  # type: ignore[arg-type]
    _opened.append(made)
    return made


async def test_a_passing_suite_moves_the_version_to_staging(
    core: Promptship, double: ModelDouble
) -> None:
    await push(core, "1.0.0")
    request = await core.request_promotion(
        NAME, "1.0.0", "staging", slack(REQUESTER), queue_tests=True
    )
    assert request.state == "open"
    assert {c.gate: c.detail for c in request.checks}["tests"] == "tests queued (5 cases)"
    work = runner(core)
    run_id = await core.claim_validation_run(work.owner)
    assert run_id is not None
    run = await work.execute(run_id)
    assert (run.state, run.passed, run.failed, run.errored) == ("passed", 5, 0, 0)
    assert (await core.request(request.id)).state == "promoted"
    assert (await core.show(NAME, "1.0.0")).status == "staging"
    detail = await core.validation_run(run_id)
    score_case = next(r for r in detail.results if r["type"] == "score")
    assert 0.6 <= score_case["score"] <= 1.0 and score_case["latency_ms"] is not None


async def test_a_runner_keeps_its_connections_from_run_to_run_until_it_is_closed(
    core: Promptship, double: ModelDouble
) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await push(core, version)

    async def run(work: SuiteRunner, version: str) -> set[str]:
        before = len(double.requests)
        done = await work.execute(await work.start(NAME, version, slack(REQUESTER)))
        assert done.passed == len(SUITE)
        return {r["connection"] for r in double.requests[before:]}

    work = runner(core, concurrency=2)
    first = await run(work, "1.0.0")
    assert 1 <= len(first) <= 2
    assert await run(work, "1.1.0") <= first  # the next run sets up no connection
    await work.aclose()
    assert not (await run(work, "1.2.0")) & first  # closed: the next run opens new ones


async def test_failures_are_reported_with_what_was_expected(
    core: Promptship, double: ModelDouble
) -> None:
    double.responder = answer_from({**GOOD, "Can I get a refund?": "Yes, guaranteed refund today!"})
    await push(core, "1.0.0")
    work = runner(core)
    run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert (run.passed, run.failed, run.errored) == (3, 2, 0) and run.state == "failed"
    detail = await core.validation_run(run.id)
    why = {r["expected"]: r["detail"] for r in detail.results if not r["passed"]}
    assert "2 business days" in why["2 business days"]
    assert "guaranteed" in why["guaranteed"]
    assert (await core.show(NAME, "1.0.0")).status == "draft"
    with pytest.raises(GateRefused, match="pass rate 60% is below the required 80%"):
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))


async def test_injected_429s_are_retried_and_the_run_completes(
    core: Promptship, double: ModelDouble
) -> None:
    await push(core, "1.0.0")
    double.fail_next(3, status=429, retry_after=0)
    work = runner(core, concurrency=1)
    run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert (run.state, run.passed, run.errored) == ("passed", 5, 0)
    assert double.request_count == 4 + 3  # 5 cases, 4 inputs (two share one answer)


async def test_provider_down_errors_every_case_and_fails_the_gate(
    core: Promptship, double: ModelDouble
) -> None:
    await push(core, "1.0.0")
    double.stop()
    work = runner(core)
    run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert (run.state, run.passed, run.failed, run.errored) == ("failed", 0, 0, 5)
    detail = await core.validation_run(run.id)
    assert all("cannot reach" in r["error"] for r in detail.results)
    with pytest.raises(GateRefused, match="5 errored"):
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))


async def test_a_proxy_page_instead_of_the_api_errors_every_case_and_the_run_finishes(
    core: Promptship, monkeypatch: pytest.MonkeyPatch
) -> None:
    await push(core, "1.0.0")
    with answering("<html>Sign in to the proxy</html>", "text/html") as page:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", page.url)
        work = runner(core)
        run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert (run.state, run.passed, run.failed, run.errored) == ("failed", 0, 0, 5)
    detail = await core.validation_run(run.id)
    assert {r["error"] for r in detail.results} == {
        f"the provider at {page.url} answered something that is not a Messages API response "
        "(text/html): is ANTHROPIC_BASE_URL the API, or a page in front of it?"
    }


class UnavailableScorer:
    """The scorer process cannot encode (it died twice, or the model is missing)."""

    async def embed(self, texts: list[str]) -> list[object]:
        raise Unavailable("the scorer process ended (exit code -9) and again on restart")

    async def similarity(self, pairs: list[tuple[str, str]]) -> list[float]:
        raise Unavailable("the scorer process ended (exit code -9) and again on restart")


async def test_answers_the_scorer_cannot_score_are_errored_and_the_rest_checked(
    core: Promptship, double: ModelDouble
) -> None:
    await push(core, "1.0.0")
    work = SuiteRunner(
        core,
        settings=RunnerSettings(timeout=5),
        scorer=UnavailableScorer(),  # type: ignore[arg-type]
    )
    _opened.append(work)
    run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert (run.passed, run.failed, run.errored) == (4, 0, 1)
    assert double.request_count == 4  # each answer asked for once: the run was not retried
    detail = await core.validation_run(run.id)
    [unscored] = [r for r in detail.results if r["error"]]
    assert unscored["type"] == "score" and unscored["got"] == GOOD["How do I roll back?"]
    assert unscored["error"] == (
        "the answer could not be scored: the scorer process ended (exit code -9) and again "
        "on restart"
    )


async def test_a_missing_key_fails_the_run_before_any_case(
    core: Promptship, double: ModelDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    await push(core, "1.0.0")
    work = runner(core)
    run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert run.state == "failed" and run.total == 0
    assert run.error is not None and "ANTHROPIC_API_KEY is not set" in run.error
    assert double.request_count == 0


async def test_cancelling_the_runner_records_a_cancelled_run(
    core: Promptship, double: ModelDouble
) -> None:
    double.latency = 5.0
    await push(core, "1.0.0")
    work = runner(core)
    run_id = await work.start(NAME, "1.0.0", slack(REQUESTER))
    task = asyncio.create_task(work.execute(run_id))
    while double.request_count == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run = await core.validation_run(run_id)
    assert run.state == "cancelled"
    assert (await core.show(NAME, "1.0.0")).status == "draft"


async def test_expected_answers_are_encoded_while_the_first_calls_are_in_flight(
    core: Promptship, double: ModelDouble, scorer: Scorer
) -> None:
    """A score case's expected text is known before its answer: it is encoded while the
    model is still answering, so the answers are all that is left to encode as they come."""
    double.latency = 60.0  # no answer comes back during this test
    tag = uuid.uuid4().hex  # texts no other test has had encoded
    tests = [
        {"input": f"question {i}", "expected": f"Answer {i} of run {tag}.", "type": "score"}
        for i in range(5)
    ]
    await push(core, "1.0.0", tests=tests)
    before = scorer.encoded_texts
    work = SuiteRunner(core, settings=RunnerSettings(timeout=90), scorer=scorer)
    _opened.append(work)
    task = asyncio.create_task(work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER))))
    try:
        for _ in range(3000):  # until the five texts are encoded (30 s at most)
            if scorer.encoded_texts - before >= 5:
                break
            await asyncio.sleep(0.01)
        assert scorer.encoded_texts - before == 5
        assert double.request_count == 5 and not task.done()  # every call still unanswered
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_run_cancelled_elsewhere_stops_its_worker(
    core: Promptship, double: ModelDouble
) -> None:
    double.latency = 2.0
    await push(core, "1.0.0")
    work = runner(core, heartbeat=0.05)
    run_id = await work.start(NAME, "1.0.0", slack(REQUESTER))
    task = asyncio.create_task(work.execute(run_id))
    while double.request_count == 0:
        await asyncio.sleep(0.01)
    await core.stop_validation_run(run_id, slack("U01"), RunState.CANCELLED, "cancelled by U01")
    result = await asyncio.wait_for(task, timeout=5)
    assert result.state == "cancelled" and result.error == "cancelled by U01"


async def test_a_heartbeat_the_store_refuses_is_tried_again_and_the_run_keeps_its_results(
    core: Promptship,
    double: ModelDouble,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One transient store error ("database is locked") while the answers come in: the
    next beat is recorded, and the run finishes with every answer it got."""
    await push(core, "1.0.0")
    recorded = core.heartbeat_validation_run
    beats = 0
    answers = threading.Event()  # the model answers once a beat after the failure is recorded

    async def locked_once(*args: Any, **kwargs: Any) -> bool:
        nonlocal beats
        beats += 1
        if beats == 1:
            raise RuntimeError("database is locked")
        alive = await recorded(*args, **kwargs)
        answers.set()
        return alive

    def held(system: str, user: str, model: str) -> str:
        answers.wait(timeout=60)  # bounds a broken heartbeat's test, not a quiet machine
        return GOOD.get(user, "I don't know.")

    monkeypatch.setattr(core, "heartbeat_validation_run", locked_once)
    double.responder = held
    work = runner(core, heartbeat=0.02)
    try:
        run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    finally:
        answers.set()
    assert (run.state, run.passed, run.errored) == ("passed", 5, 0)
    assert beats >= 2
    assert "heartbeat was not recorded" in caplog.text


async def test_a_dead_workers_run_is_re_queued_for_another_worker(
    core: Promptship, clock: ManualClock
) -> None:
    await push(core, "1.0.0")
    run = await core.start_validation_run(
        NAME, "1.0.0", slack(REQUESTER), total=5, owner="crashed-worker"
    )
    assert await core.recover_interrupted_runs() == []  # its heartbeat is fresh
    clock.advance(120)
    assert await core.recover_interrupted_runs() == [run.id]
    assert (await core.validation_run(run.id)).state == "queued"
    assert (await core.show(NAME, "1.0.0")).status == "testing"
    assert await core.claim_validation_run("new-worker") == run.id
    events = [e for e in await core.recent_events() if e.action == "validation.requeued"]
    assert [e.details["attempts"] for e in events] == [1]


async def outbox(core: Promptship, topic: str) -> list[Delivery]:
    return [d for d in await core.due_notifications("C0PROMPTOPS", 100) if d.topic == topic]


def slack_text(delivery: Delivery) -> str:
    message, _ = render(delivery)
    return json.dumps(message.blocks, ensure_ascii=False)


async def test_a_run_interrupted_once_is_re_queued_and_its_request_promotes(
    core: Promptship, clock: ManualClock, double: ModelDouble
) -> None:
    await push(core, "1.0.0")
    request = await core.request_promotion(
        NAME, "1.0.0", "staging", slack(REQUESTER), queue_tests=True
    )
    run_id = await core.claim_validation_run("killed-worker")  # then kill -9: no heartbeat
    assert run_id is not None
    clock.advance(61)
    assert await core.recover_interrupted_runs() == [run_id]
    waiting = await core.request(request.id)
    assert waiting.state == "open"
    tests_gate = {c.gate: c.detail for c in waiting.checks}["tests"]
    assert tests_gate == "tests re-queued after a restart (5 cases)"
    updated = await outbox(core, "request.updated")
    assert updated and "re-queued after a restart" in slack_text(updated[-1])

    worker = ValidationWorker(runner(core), poll_interval=0.05)
    task = asyncio.create_task(worker.run_forever())
    try:
        async with asyncio.timeout(60):
            while (await core.request(request.id)).state == "open":
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    run = await core.validation_run(run_id)
    assert (run.state, run.passed) == ("passed", 5)
    assert (await core.request(request.id)).state == "promoted"
    assert (await core.show(NAME, "1.0.0")).status == "staging"


async def test_a_run_interrupted_twice_fails_its_request_with_the_reason(
    core: Promptship, clock: ManualClock
) -> None:
    await push(core, "1.0.0")
    request = await core.request_promotion(
        NAME, "1.0.0", "staging", slack(REQUESTER), queue_tests=True
    )
    run_id = await core.claim_validation_run("first-worker")
    clock.advance(61)
    assert await core.recover_interrupted_runs() == [run_id]
    assert await core.claim_validation_run("second-worker") == run_id
    await core.heartbeat_validation_run(run_id, "second-worker", 2, 0, 0)
    clock.advance(30)
    assert await core.recover_interrupted_runs() == []  # it reported 30 s ago
    clock.advance(31)
    assert await core.recover_interrupted_runs() == [run_id]

    why = (
        "the run was interrupted twice (the worker stopped); "
        f"run it again with /prompt test {NAME} 1.0.0"
    )
    run = await core.validation_run(run_id)
    assert (run.state, run.error) == ("interrupted", why)
    failed = await core.request(request.id)
    assert (failed.state, failed.close_reason) == ("failed", why)
    assert (await core.show(NAME, "1.0.0")).status == "draft"
    notified = await outbox(core, "request.failed")
    assert len(notified) == 1 and why in slack_text(notified[0])
    assert await core.recover_interrupted_runs() == []  # nothing left to recover
    # a new run of the same version can start once the old one is known dead
    await core.start_validation_run(NAME, "1.0.0", slack(REQUESTER), total=5, owner="new-worker")


async def test_regression_against_production_blocks_until_overridden(
    core: Promptship, double: ModelDouble
) -> None:
    await push(core, "1.0.0")
    work = runner(core)
    await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    await core.approve(request.id, slack("U01"))
    await core.approve(request.id, slack("U02"))

    # 1.1.0 passes 4/5 (80%: enough) but breaks a case production passes
    double.responder = answer_from({**GOOD, "How many projects on Team?": "Plenty of projects."})
    await push(core, "1.1.0", system_prompt="v1.1")
    run = await work.execute(await work.start(NAME, "1.1.0", slack(REQUESTER)))
    assert run.state == "passed" and run.regressions == ["How many projects on Team?"]
    with pytest.raises(GateRefused, match="pass on production and fail here"):
        await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    with pytest.raises(Forbidden, match="only approvers can override"):
        await core.override_regressions(NAME, "1.1.0", "mine is fine", slack(REQUESTER))
    await core.override_regressions(NAME, "1.1.0", "the plan copy changed on purpose", slack("U01"))
    assert (
        await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    ).state == "promoted"
    history = await core.history(NAME)
    assert any(e.action == "validation.regressions_overridden" for e in history.events)


async def test_cases_sharing_an_input_and_vars_share_one_answer(
    core: Promptship, double: ModelDouble
) -> None:
    """As promptfoo checks every assert of a test against one output: three cases on one
    input cost one call, each checks the same answer, and its tokens count once."""
    suite = [
        {"input": "Can I get a refund?", "expected": "2 business days", "type": "contains"},
        {"input": "Can I get a refund?", "expected": "guaranteed", "type": "not-contains"},
        {"input": "Can I get a refund?", "expected": "Billing", "type": "starts-with"},
        {"input": "How many projects on Team?", "expected": "25", "type": "contains"},
    ]
    await push(core, "1.0.0", tests=suite)
    work = runner(core)
    run = await work.execute(await work.start(NAME, "1.0.0", slack(REQUESTER)))
    assert (run.passed, run.failed) == (4, 0)
    assert double.request_count == 2
    results = (await core.validation_run(run.id)).results
    refund = [r for r in results if r["input"] == "Can I get a refund?"]
    assert {r["got"] for r in refund} == {GOOD["Can I get a refund?"]}
    assert sum(1 for r in refund if r["input_tokens"]) == 1
