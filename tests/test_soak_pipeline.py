"""The soak cycle as a pipeline: samples read a page at a time, answers scored in batches
while the calls go on, and the same result a single pass over every pair gives (the same
divergent count, the same least similar pairs with the same scores, on a fixed seed)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator

import pytest

from promptship.errors import Unavailable
from promptship.services.soak_spec import CycleSpec, Sample, Side
from promptship.services.soaks import _cycle_state
from promptship.soak.cycle import BATCHES_AHEAD, run_cycle
from promptship.testing.model_double import ModelDouble
from promptship.validation.scoring import Scorer

ANSWERS = [
    "To reset your password, open Settings, choose Security and press Reset password.",
    "Refunds are paid back to the original card within five working days.",
    "You can export your invoices as PDF from the Billing page.",
    "Our support team answers chat messages between 9:00 and 17:00 CET.",
    "Arr, the sea be calm and the parrots be singing tonight, matey.",
    "Shipping to Norway takes three to five days by post.",
]


def staging_answer(system: str, user: str, model: str) -> str:
    """The candidate's answer to query ``… N``: a fixed pick, sometimes off topic."""
    n = int(user.split()[-1])
    return ANSWERS[(n * 7) % len(ANSWERS)]


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    with ModelDouble(responder=staging_answer) as double:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", double.url)
        yield double


def logged(n: int, seed: int = 11) -> list[Sample]:
    """``n`` production queries with the answer production gave (some repeated)."""
    rng = random.Random(seed)
    return [Sample(f"customer question {i}", rng.choice(ANSWERS[:4]), "1.0.0") for i in range(n)]


def cycle(samples: list[Sample]) -> CycleSpec:
    def side(version: str) -> Side:
        return Side(version, "anthropic", "claude-test", 0.0, 200, "Be helpful.")

    return CycleSpec(
        soak_id=1,
        cycle=1,
        kind="staging-shadow",
        prompt="support",
        candidate=side("1.1.0"),
        baseline=side("1.0.0"),
        samples=samples,
        min_samples=5,
        similarity=0.85,
        max_divergence=0.1,
    )


async def one_pass(spec: CycleSpec, scorer: Scorer) -> tuple[int, list[tuple[str, float]]]:
    """What scoring every pair at the end gives: the divergent count and the worst five."""
    pairs = [(staging_answer("", s.input, ""), s.output or "") for s in spec.samples]
    similarities = await scorer.similarity(pairs)
    ranked = sorted(zip(similarities, spec.samples, strict=True), key=lambda item: item[0])
    divergent = sum(1 for similarity, _ in ranked if similarity < spec.similarity)
    worst = [(s.input, round(sim, 3)) for sim, s in ranked[:5] if sim < spec.similarity]
    return divergent, worst


async def test_the_pipeline_gives_what_one_pass_over_every_pair_gives(
    model: ModelDouble, scorer: Scorer
) -> None:
    spec = cycle(logged(240))
    read: list[int] = []

    async def pages(found: CycleSpec) -> AsyncIterator[list[Sample]]:
        for start in range(0, len(found.samples), 37):  # pages that do not divide batches
            read.append(start)
            yield found.samples[start : start + 37]

    result = await run_cycle(spec, scorer, pages=pages, concurrency=5, batch=8)
    divergent, worst = await one_pass(spec, scorer)
    assert len(read) == 7  # every page read, once
    assert (result.sample_size, result.errored, result.model_calls) == (240, 0, 240)
    assert result.divergent == divergent and 0 < divergent < 240
    assert [(w["input"], w["similarity"]) for w in result.worst] == worst
    # scored batch by batch while the calls went on; the calls' clock and the scorer's both ran
    assert result.calls_seconds > 0 and result.scoring_seconds > 0


async def test_the_samples_are_read_as_the_calls_need_them(
    model: ModelDouble, scorer: Scorer
) -> None:
    """The cycle holds a page and a short queue, never the whole sample: a page is read only
    when the one before is nearly taken."""
    spec = cycle(logged(400))
    answered_before: list[int] = []

    async def pages(found: CycleSpec) -> AsyncIterator[list[Sample]]:
        for start in range(0, len(found.samples), 50):
            answered_before.append(model.request_count)
            yield found.samples[start : start + 50]

    result = await run_cycle(spec, scorer, pages=pages, concurrency=4, batch=16)
    assert result.model_calls == 400
    # page k is read once the calls have nearly caught up with what was read before it:
    # at most the queue (2 x concurrency) and the calls in flight are ahead of them
    for k, answered in enumerate(answered_before[1:], start=1):
        assert answered >= 50 * k - 3 * 4, (k, answered_before)


async def test_a_cycle_of_suite_inputs_makes_no_pairs_and_scores_nothing(
    model: ModelDouble, scorer: Scorer
) -> None:
    spec = cycle([Sample(f"suite question {i}") for i in range(9)])
    spec = CycleSpec(**{**spec.__dict__, "baseline": None})
    result = await run_cycle(spec, scorer, concurrency=3, batch=4)
    assert (result.model_calls, result.divergent, result.worst) == (9, 0, [])
    assert result.scoring_seconds == 0


class UnavailableScorer:
    """A scorer whose process cannot encode (it died twice, or the model is missing)."""

    def __init__(self) -> None:
        self.batches = 0

    async def similarity(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.batches += 1
        raise Unavailable("the scorer process ended (exit code -9) and again on restart")


async def test_a_cycle_whose_answers_cannot_be_scored_is_errored_and_stops_calling(
    model: ModelDouble,
) -> None:
    spec = cycle(logged(400))
    scorer = UnavailableScorer()
    result = await run_cycle(spec, scorer, concurrency=4, batch=8)  # type: ignore[arg-type]
    assert result.error is not None
    assert "could not be scored: the scorer process ended (exit code -9)" in result.error
    assert _cycle_state(spec, result) == "errored"  # not passed with 0 divergent
    # the calls stop at the first failed batch: at most the batches already at the scorer
    # and the calls in flight were made, not the other 400
    assert scorer.batches <= BATCHES_AHEAD
    assert model.request_count <= result.model_calls < 8 * (BATCHES_AHEAD + 1) + 4
