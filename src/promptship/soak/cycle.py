"""One soak cycle: replay sampled production queries on both versions, score the pairs.

Both versions are rendered with the vars the app logged with the query (a template's
defaults fill the rest; a sample whose vars do not render a side counts as errored). A logged
answer is reused for the version that gave it, so a cycle over traffic logged with
its production output calls the model once per query instead of twice.

The cycle is a pipeline, so its wall time approaches the larger of its calls and its
scoring rather than their sum, and its memory does not grow with the sample: the samples
are read a page at a time (``pages``) into a short queue; ``concurrency`` workers take them,
call the model under an adaptive limit (``validation.concurrency``: it narrows on rate
limits and widens back; the provider retries through it) and hand each pair of answers on;
pairs are scored in batches of ``batch`` as they arrive, in the scorer's worker,
while the calls go on. Only what the result needs is kept: the divergent count and the five
least similar pairs. The result is the one scoring every pair at the end would give.
A batch that cannot be scored (the scorer unavailable) ends the cycle as errored with the
reason, and no call starts after it.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from promptship.domain.template import MissingVariable
from promptship.errors import BadInput, PromptshipError, reason
from promptship.services.soak_spec import CycleResult, CycleSpec, Sample, Side
from promptship.validation.concurrency import AdaptiveLimiter
from promptship.validation.providers import Provider, ProviderError, make_provider
from promptship.validation.scoring import Scorer

ProviderFactory = Callable[[str], Provider]
#: a cycle's samples, a page at a time (``Promptship.soak_sample_pages``)
SamplePages = Callable[[CycleSpec], AsyncIterator[list[Sample]]]

#: pairs scored in one pass: MiniLM's good batch sizes on a CPU are 16-64
BATCH = 32
#: batches handed to the scorer and not yet scored, past which the workers wait for it
BATCHES_AHEAD = 4
#: the least similar pairs a cycle reports
WORST = 5


class _ScoringFailed(Exception):
    """A batch could not be scored: the cycle stops calling the model (its answers could
    not be scored either) and reports the failure as its error."""


async def held_pages(spec: CycleSpec) -> AsyncIterator[list[Sample]]:
    """The samples a spec holds (the suite's inputs, or a spec built by hand), as one page."""
    if spec.traffic is not None:
        raise ValueError("this cycle reads logged traffic: pass pages=core.soak_sample_pages")
    yield spec.samples


class _Scoring:
    """Pairs in, scored a batch at a time while more arrive; keeps the divergent count and
    the least similar pairs (by similarity, then the sample's place in the cycle: the order
    a single pass over every pair would rank them in)."""

    def __init__(self, scorer: Scorer, threshold: float, batch: int) -> None:
        self.scorer, self.threshold, self.batch = scorer, threshold, batch
        self.divergent = 0
        #: wall time with a batch at the scorer (being encoded or queued behind one):
        #: overlapping batches count once
        self.seconds = 0.0
        self._at_scorer = 0
        self._since = 0.0
        self._pending: list[tuple[int, Sample, tuple[str, str]]] = []
        self._ahead = asyncio.Semaphore(BATCHES_AHEAD)
        self._tasks: set[asyncio.Task[None]] = set()
        #: the WORST least similar so far, as a max-heap on (similarity, place)
        self._worst: list[tuple[float, int, Sample, tuple[str, str]]] = []
        #: why the first batch that could not be scored failed: the cycle's error
        self.error: str | None = None

    def check(self) -> None:
        """Raise ``_ScoringFailed`` once a batch could not be scored."""
        if self.error is not None:
            raise _ScoringFailed(self.error)

    async def add(self, index: int, sample: Sample, pair: tuple[str, str]) -> None:
        self.check()
        self._pending.append((index, sample, pair))
        if len(self._pending) >= self.batch:
            await self._launch()

    async def _launch(self) -> None:
        batch, self._pending = self._pending, []
        await self._ahead.acquire()  # the scorer is behind: the calls wait for it
        if self.error is not None:  # a batch failed meanwhile: this one would be wasted
            self._ahead.release()
            return
        task = asyncio.create_task(self._score(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score(self, batch: list[tuple[int, Sample, tuple[str, str]]]) -> None:
        if not self._at_scorer:
            self._since = time.perf_counter()
        self._at_scorer += 1
        try:
            similarities = await self.scorer.similarity([pair for _, _, pair in batch])
        except Exception as exc:  # e.g. the scorer process is unavailable
            if self.error is None:
                self.error = f"the answers could not be scored: {reason(exc)}"
            return
        finally:
            self._at_scorer -= 1
            if not self._at_scorer:
                self.seconds += time.perf_counter() - self._since
            self._ahead.release()
        for similarity, (index, sample, pair) in zip(similarities, batch, strict=True):
            if similarity < self.threshold:
                self.divergent += 1
            entry = (-similarity, -index, sample, pair)
            if len(self._worst) < WORST:
                heapq.heappush(self._worst, entry)
            elif (similarity, index) < (-self._worst[0][0], -self._worst[0][1]):
                heapq.heapreplace(self._worst, entry)

    async def finish(self) -> None:
        """Score what is left, and wait for every batch."""
        if self._pending and self.error is None:
            await self._launch()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    def worst(self) -> list[dict[str, Any]]:
        ranked = sorted((-s, -i, sample, pair) for s, i, sample, pair in self._worst)
        return [
            {
                "input": sample.input[:500],
                "candidate": pair[0][:500],
                "baseline": pair[1][:500],
                "similarity": round(similarity, 3),
            }
            for similarity, _, sample, pair in ranked
            if similarity < self.threshold
        ]


async def run_cycle(
    spec: CycleSpec,
    scorer: Scorer,
    *,
    pages: SamplePages | None = None,
    concurrency: int = 16,
    batch: int = BATCH,
    providers: ProviderFactory | None = None,
    strip_reasoning: bool = True,
) -> CycleResult:
    """``pages`` reads the samples (``Promptship.soak_sample_pages``; by default the ones the
    spec holds). ``strip_reasoning`` is the policy's switch: when on, reasoning in front of
    an answer is removed before the two versions' answers are compared."""
    factory = providers or (
        lambda kind: make_provider(kind, timeout=60.0, strip_reasoning=strip_reasoning)
    )
    size = spec.sample_size
    if spec.baseline is not None and size < spec.min_samples:
        return CycleResult(sample_size=size)  # not enough traffic: no calls
    opened: dict[str, Provider] = {}
    try:
        for side in (spec.candidate, spec.baseline):
            if side is not None and side.provider not in opened:
                opened[side.provider] = factory(side.provider)
    except PromptshipError as exc:
        return CycleResult(sample_size=size, error=exc.message)
    limit = AdaptiveLimiter(concurrency)
    result = CycleResult(sample_size=size)
    scoring = _Scoring(scorer, spec.similarity, batch)
    queue: asyncio.Queue[tuple[int, Sample] | None] = asyncio.Queue(maxsize=2 * concurrency)

    async def answer(side: Side, sample: Sample) -> str:
        if sample.output is not None and sample.version == side.version:
            return sample.output
        try:
            rendered = side.render(sample.vars)  # both sides with the vars the app used
        except MissingVariable as exc:
            raise BadInput(
                f"{side.version} needs {', '.join(exc.names)}, which the logged query does not "
                "carry: log traffic with its vars (log_traffic(..., vars=...)) or give it a "
                "default"
            ) from None
        except BadInput as exc:
            raise BadInput(f"{side.version} does not render: {exc.message}") from None
        async with limit:
            scoring.check()  # no answer is asked for that could not be scored
            result.model_calls += 1
            completion = await opened[side.provider].complete(
                model=side.model,
                system=rendered.system,
                messages=rendered.conversation(sample.input),
                temperature=side.temperature,
                max_tokens=side.max_tokens,
            )
            return completion.text

    async def both(sample: Sample) -> tuple[str, str] | None:
        try:
            candidate = await answer(spec.candidate, sample)
            if spec.baseline is None:
                return None
            return candidate, await answer(spec.baseline, sample)
        except (ProviderError, BadInput) as exc:  # no answer, or the vars do not render
            result.errored += 1
            if result.first_error is None:
                result.first_error = exc.message if isinstance(exc, BadInput) else str(exc)
            return None

    async def feed() -> None:
        index = 0
        async for found in (pages or held_pages)(spec):
            for sample in found:
                await queue.put((index, sample))
                index += 1
        for _ in range(concurrency):
            await queue.put(None)

    async def work() -> None:
        while (item := await queue.get()) is not None:
            index, sample = item
            pair = await both(sample)
            if pair is not None:
                await scoring.add(index, sample, pair)

    started = time.perf_counter()
    try:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(feed())
                for _ in range(concurrency):
                    group.create_task(work())
        except* _ScoringFailed:
            pass  # the calls stopped: scoring.error says why
        result.calls_seconds = time.perf_counter() - started
        await scoring.finish()
    finally:
        scoring.cancel()
        for provider in opened.values():
            await provider.aclose()
    result.scoring_seconds = scoring.seconds
    result.error = scoring.error
    result.divergent = scoring.divergent
    result.worst = scoring.worst()
    return result
