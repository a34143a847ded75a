"""The MiniLM scorer: loaded once, offline, in a scorer process at a lower priority (or a
thread); long texts chunked; each text encoded once; never blocks the event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from promptship.errors import BadInput, Unavailable
from promptship.validation.scoring import Scorer, get_scorer
from tests.slack_helpers import wait_for

LONG = " ".join(["The weather report mentions clouds and light wind in the valley."] * 40)
FIXED = [
    ("How do I roll back a prompt?", "How can I revert a prompt to the previous version?"),
    ("How do I roll back a prompt?", "The cafeteria serves soup on Mondays."),
    ("Staging soaks for an hour.", "A staging soak lasts one hour."),
    ("", "an empty answer"),
    ("Ünïcødé and émojis 🚀 are fine.", "Unicode and emoji are fine."),
    (LONG, "clouds and wind in the valley"),
    (LONG, LONG),
]


@pytest.fixture(scope="module")
def thread_scorer() -> Scorer:
    """A scorer with the model in this process, to compare the scorer process with."""
    return Scorer(mode="thread")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_the_process_wide_model_loads_once() -> None:
    scorer = get_scorer()
    await scorer.similarity([("a", "b")])
    await get_scorer().similarity([("c", "d")])
    assert get_scorer() is scorer and scorer.load_count == 1


async def test_similar_texts_score_higher_than_unrelated(scorer: Scorer) -> None:
    close, far = await scorer.similarity(FIXED[:2])
    assert close > 0.6 > far


async def test_the_scorer_process_scores_as_the_model_in_this_process_does(
    scorer: Scorer, thread_scorer: Scorer
) -> None:
    assert scorer.mode == "process"
    ours, theirs = await scorer.similarity(FIXED), await thread_scorer.similarity(FIXED)
    assert ours == pytest.approx(theirs, abs=1e-5)
    texts = [text for pair in FIXED for text in pair]
    assert np.allclose(await scorer.embed(texts), await thread_scorer.embed(texts), atol=1e-5)


async def test_overlapping_calls_each_get_their_own_scores_in_order(
    scorer: Scorer, thread_scorer: Scorer
) -> None:
    # batches of 16 to 64 pairs scored while others are in flight, some texts in several
    calls = [
        [
            (f"answer {i} of batch {batch} about rollbacks", f"an answer about topic {i % 7}")
            for i in range(size)
        ]
        for batch, size in enumerate([16, 64, 23, 40, 16, 64, 31, 50])
    ]
    together = await asyncio.gather(*(scorer.similarity(pairs) for pairs in calls))
    for pairs, scores in zip(calls, together, strict=True):
        assert scores == pytest.approx(await thread_scorer.similarity(pairs), abs=1e-5)


async def test_the_scorer_process_runs_at_a_lower_priority(scorer: Scorer) -> None:
    await scorer.warm_up()
    assert scorer.pid is not None and scorer.pid != os.getpid()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, scorer.pid) == min(19, ours + 10)


async def test_repeated_texts_are_encoded_once(scorer: Scorer) -> None:
    before = scorer.encoded_texts
    scores = await scorer.similarity([("a repeated answer", "a repeated expectation")] * 20)
    assert len(set(scores)) == 1 and scorer.encoded_texts - before == 2
    vectors = await scorer.embed(["a text said twice", "a text said twice"])
    assert np.array_equal(vectors[0], vectors[1]) and scorer.encoded_texts - before == 3
    # a text seen in an earlier call (a logged answer in the next soak cycle) is not encoded
    await scorer.similarity([("a text said twice", "a repeated answer")])
    assert scorer.encoded_texts - before == 3


async def test_expected_texts_are_encoded_once(scorer: Scorer) -> None:
    expected = "an expected answer that repeats across suites"
    await scorer.similarity([("first answer", expected)])
    before = scorer.encoded_texts
    await scorer.similarity([("second answer", expected)])
    assert scorer.encoded_texts - before == 1  # only the new answer


async def test_the_cache_of_embeddings_is_bounded(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scorer, "cache_size", 4)
    texts = [f"bounded cache text {i}" for i in range(10)]
    await scorer.embed(texts)
    assert len(scorer._cache) == 4
    before = scorer.encoded_texts
    await scorer.embed(texts[-4:])  # the newest are kept
    assert scorer.encoded_texts == before
    await scorer.embed(texts[:1])  # the oldest were dropped
    assert scorer.encoded_texts == before + 1 and len(scorer._cache) == 4


async def test_long_answers_are_chunked_not_cut(scorer: Scorer, thread_scorer: Scorer) -> None:
    # a long preamble, then the part that answers the question: the opening alone misses it
    preamble = " ".join(["The weather report mentions clouds and light wind in the valley."] * 22)
    ending = "To roll back, point production at the previous version of the prompt."
    body = " ".join(
        [
            "Rolling back means production serves the previous prompt version again.",
            "On-call can revert the prompt in production to the earlier version at once.",
        ]
        * 9
    )
    long_answer = f"{preamble} {body}"
    assert thread_scorer._encoder is not None
    model = thread_scorer._encoder.load()
    pieces = model.tokenizer(long_answer, add_special_tokens=False, verbose=False)["input_ids"]
    assert len(pieces) > model.max_seq_length  # the model alone would read the opening only
    (chunked,) = await scorer.similarity([(long_answer, ending)])
    naive = model.encode([long_answer, ending], normalize_embeddings=True)  # truncates at 256
    truncated = float(naive[0] @ naive[1])
    assert chunked > truncated + 0.1, (chunked, truncated)


@pytest.mark.slow
async def test_a_scorer_process_that_dies_is_started_again_and_none_outlives_close() -> None:
    scorer = Scorer(mode="process")
    try:
        await scorer.warm_up()
        first = scorer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        (score,) = await scorer.similarity([("a prompt", "a prompt")])
        assert score == pytest.approx(1.0) and scorer.load_count == 2
        second = scorer.pid
        assert second is not None and second != first
        # closing cuts an encode in progress short, and says so to whoever waits for it
        many = asyncio.create_task(scorer.embed([f"text number {i}" for i in range(20_000)]))
        while not scorer._process_handle._lock.locked():
            await asyncio.sleep(0.01)
    finally:
        scorer.close()
    assert scorer.pid is None and gone(first) and gone(second)
    with pytest.raises(Unavailable, match="closed while it was encoding"):
        await many


@pytest.mark.slow
async def test_a_stopped_scorer_process_is_killed_and_started_again() -> None:
    scorer = Scorer(mode="process", timeout=15, per_text=0)
    try:
        await scorer.warm_up()
        first = scorer.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # wedged: alive, but never answers
        (score,) = await asyncio.wait_for(scorer.similarity([("a prompt", "a prompt")]), 120)
        assert score == pytest.approx(1.0) and scorer.load_count == 2
        assert scorer.pid not in (None, first)
        assert gone(first)
    finally:
        scorer.close()


async def test_a_batch_too_big_to_send_to_a_stopped_scorer_process_fails_in_time() -> None:
    scorer = Scorer(mode="process", timeout=3, per_text=0)
    try:
        await scorer.warm_up()
        assert scorer.pid is not None
        os.kill(scorer.pid, signal.SIGSTOP)
        texts = [f"{i} " + "x" * 200 for i in range(20_000)]  # more than the socket holds
        with pytest.raises(Unavailable, match="did not answer within 3 s .* and again"):
            await asyncio.wait_for(scorer.embed(texts), 120)
    finally:
        scorer.close()


async def test_a_scorer_process_that_never_answers_in_time_is_an_error() -> None:
    scorer = Scorer(mode="process", timeout=1e-9, per_text=0)
    try:
        with pytest.raises(Unavailable, match="did not answer within .* and again when started"):
            await asyncio.wait_for(scorer.similarity([("a", "b")]), 120)
        assert scorer.load_count == 2 and scorer.pid is None
    finally:
        scorer.close()


async def test_a_scorer_process_that_cannot_load_the_model_says_so(tmp_path: Path) -> None:
    scorer = Scorer(f"{tmp_path}/no-such-model", mode="process")
    with pytest.raises(Unavailable, match="could not load the model at .*no-such-model: no such"):
        await scorer.similarity([("a", "b")])
    assert scorer.pid is None


@pytest.fixture
def server_like() -> Iterator[subprocess.Popen[str]]:
    """A process that starts its scorer process, prints its id, and waits."""
    code = (
        "import asyncio, sys, threading, time\n"
        "from promptship.validation.scoring import Scorer\n"
        "scorer = Scorer(mode='process')\n"
        "threading.Thread(target=asyncio.run, args=(scorer.warm_up(),), daemon=True).start()\n"
        "while scorer.pid is None:\n"
        "    time.sleep(0.01)\n"
        "print(scorer.pid, flush=True)  # the model is still loading: it need not finish\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    yield proc
    proc.kill()
    proc.communicate()


def test_the_scorer_process_ends_with_its_server_even_a_killed_one(
    server_like: subprocess.Popen[str],
) -> None:
    assert server_like.stdout is not None
    child = int(server_like.stdout.readline())
    assert not gone(child)
    server_like.kill()
    server_like.wait()
    wait_for(lambda: gone(child), timeout=60, what="the orphaned scorer process to end")


@pytest.mark.slow
async def test_encoding_does_not_block_the_event_loop(scorer: Scorer) -> None:
    texts = [f"sentence number {i} about prompts, rollbacks and staging soaks" for i in range(1000)]
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    await scorer.embed(texts)
    took = time.perf_counter() - started
    tick.cancel()
    assert took > 0.5 and len(gaps) > 10
    assert max(gaps) < took / 3, (max(gaps), took)


def test_the_scorer_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSHIP_SCORER_THREADS", "3")
    assert Scorer().threads == 3
    monkeypatch.setenv("PROMPTSHIP_SCORER", "thread")
    assert Scorer().mode == "thread"
    monkeypatch.delenv("PROMPTSHIP_SCORER")
    assert Scorer().mode == "process"  # the default
    monkeypatch.setenv("PROMPTSHIP_SCORER", "gpu")
    with pytest.raises(BadInput, match="PROMPTSHIP_SCORER must be process or thread"):
        Scorer()
    monkeypatch.delenv("PROMPTSHIP_SCORER")
    monkeypatch.setenv("PROMPTSHIP_SCORER_TIMEOUT", "90")
    assert Scorer().timeout == 90
    monkeypatch.setenv("PROMPTSHIP_SCORER_TIMEOUT", "soon")
    with pytest.raises(BadInput, match="PROMPTSHIP_SCORER_TIMEOUT must be a number of seconds"):
        Scorer()
    monkeypatch.delenv("PROMPTSHIP_SCORER_TIMEOUT")
    monkeypatch.setenv("PROMPTSHIP_SCORER_THREADS", "many")
    with pytest.raises(BadInput, match="PROMPTSHIP_SCORER_THREADS must be a whole number"):
        Scorer()
