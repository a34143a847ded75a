"""One soak cycle: replay sampled production queries on both versions, score the pairs.

Both versions are rendered with the vars the app logged with the query (a template's
defaults fill the rest; a sample whose vars do not render a side counts as errored). A logged
answer is reused for the version that gave it, so a cycle over traffic logged with
its production output calls the model once per query instead of twice. Calls run under a
concurrency limit with the provider SDK's own retries; the scorer batches every pair of the
cycle into one pass in its worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from promptship.domain.template import MissingVariable
from promptship.errors import BadInput, PromptshipError
from promptship.services.soak_spec import CycleResult, CycleSpec, Sample, Side
from promptship.validation.concurrency import AdaptiveLimiter
from promptship.validation.providers import Provider, ProviderError, make_provider
from promptship.validation.scoring import Scorer

ProviderFactory = Callable[[str], Provider]


async def run_cycle(
    spec: CycleSpec,
    scorer: Scorer,
    *,
    concurrency: int = 16,
    providers: ProviderFactory | None = None,
    strip_reasoning: bool = True,
) -> CycleResult:
    """``strip_reasoning`` is the policy's switch: when on, reasoning in front of an answer
    is removed before the two versions' answers are compared."""
    factory = providers or (
        lambda kind: make_provider(kind, timeout=60.0, strip_reasoning=strip_reasoning)
    )
    if spec.baseline is not None and len(spec.samples) < spec.min_samples:
        return CycleResult(sample_size=len(spec.samples))  # not enough traffic: no calls
    opened: dict[str, Provider] = {}
    try:
        for side in (spec.candidate, spec.baseline):
            if side is not None and side.provider not in opened:
                opened[side.provider] = factory(side.provider)
    except PromptshipError as exc:
        return CycleResult(sample_size=len(spec.samples), error=exc.message)
    limit = AdaptiveLimiter(concurrency)
    result = CycleResult(sample_size=len(spec.samples))

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

    started = time.perf_counter()
    try:
        answers = await asyncio.gather(*(both(s) for s in spec.samples))
    finally:
        for provider in opened.values():
            await provider.aclose()
    result.calls_seconds = time.perf_counter() - started
    scored = [(s, pair) for s, pair in zip(spec.samples, answers, strict=True) if pair]
    if not scored:
        return result
    started = time.perf_counter()
    similarities = await scorer.similarity([pair for _, pair in scored])
    result.scoring_seconds = time.perf_counter() - started
    ranked = sorted(zip(similarities, scored, strict=True), key=lambda item: item[0])
    result.divergent = sum(1 for similarity, _ in ranked if similarity < spec.similarity)
    result.worst = [
        {
            "input": sample.input[:500],
            "candidate": pair[0][:500],
            "baseline": pair[1][:500],
            "similarity": round(similarity, 3),
        }
        for similarity, (sample, pair) in ranked[:5]
        if similarity < spec.similarity
    ]
    return result
