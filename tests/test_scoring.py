"""The MiniLM scorer: loaded once, offline; long texts chunked; never blocks the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from promptship.validation.scoring import Scorer, get_scorer


async def test_the_process_wide_model_loads_once() -> None:
    scorer = get_scorer()
    await scorer.similarity([("a", "b")])
    await get_scorer().similarity([("c", "d")])
    assert get_scorer() is scorer and scorer.load_count == 1


async def test_similar_texts_score_higher_than_unrelated(scorer: Scorer) -> None:
    close, far = await scorer.similarity(
        [
            ("How do I roll back a prompt?", "How can I revert a prompt to the previous version?"),
            ("How do I roll back a prompt?", "The cafeteria serves soup on Mondays."),
        ]
    )
    assert close > 0.6 > far


async def test_long_answers_are_chunked_not_cut(scorer: Scorer) -> None:
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
    model = scorer._load()
    pieces = model.tokenizer(long_answer, add_special_tokens=False, verbose=False)["input_ids"]
    assert len(pieces) > model.max_seq_length  # the model alone would read the opening only
    (chunked,) = await scorer.similarity([(long_answer, ending)])
    naive = model.encode([long_answer, ending], normalize_embeddings=True)  # truncates at 256
    truncated = float(naive[0] @ naive[1])
    assert chunked > truncated + 0.1, (chunked, truncated)


async def test_expected_texts_are_encoded_once(scorer: Scorer) -> None:
    expected = "an expected answer that repeats across suites"
    await scorer.similarity([("first answer", expected)])
    before = scorer.encoded_texts
    await scorer.similarity([("second answer", expected)])
    assert scorer.encoded_texts - before == 1  # only the new answer


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


def test_scorer_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from promptship.errors import BadInput

    monkeypatch.setenv("PROMPTSHIP_SCORER_THREADS", "3")
    assert Scorer().threads == 3
    monkeypatch.setenv("PROMPTSHIP_SCORER_THREADS", "many")
    with pytest.raises(BadInput, match="PROMPTSHIP_SCORER_THREADS must be a whole number"):
        Scorer()
