"""One soak cycle at production scale: 1,000 sampled queries at 100 ms model latency.

The cycle runs through the real code (``run_cycle``: the anthropic SDK against the model
double in its own process, the process-wide MiniLM scorer), with every sample carrying its
logged production answer, so only the staging prompt is called. Prints wall time, model
calls, the calls' and the scoring's share, peak RSS, and the ratios to the naive design:
calls one after another, the production prompt re-run for every query, and the embedding
model loaded for every pair (the naive parts are timed on a sample and scaled).

    .venv/bin/python benchmarks/soak.py [--samples 1000] [--latency 0.1] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.validation import model_double_process
from promptship.services.soak_spec import CycleSpec, Sample, Side
from promptship.soak.cycle import run_cycle
from promptship.validation.providers import make_provider
from promptship.validation.scoring import Scorer, default_model_path

STAGING = Side("1.1.0", "anthropic", "claude-bench", 0.0, 200, "You are a concise agent.")
PRODUCTION = Side("1.0.0", "anthropic", "claude-bench", 0.0, 200, "You are a helpful agent.")


def samples(n: int) -> list[Sample]:
    return [
        Sample(
            f"customer question {i} about order {i * 7 % 1000}",
            f"Answer: customer question {i} about order {i * 7 % 1000}",
            PRODUCTION.version,
        )
        for i in range(n)
    ]


def spec(items: list[Sample]) -> CycleSpec:
    return CycleSpec(
        soak_id=1,
        cycle=1,
        kind="staging-shadow",
        prompt="bench",
        candidate=STAGING,
        baseline=PRODUCTION,
        samples=items,
        min_samples=1,
        similarity=0.85,
        max_divergence=0.1,
    )


async def naive_per_query(items: list[Sample], provider_kind: str) -> tuple[float, float]:
    """Per query: call staging, re-run production, load the model, score. (calls, scoring)"""
    from sentence_transformers import SentenceTransformer

    provider = make_provider(provider_kind)
    calls = scoring = 0.0
    try:
        for sample in items:
            started = time.perf_counter()
            answers = []
            for side in (STAGING, PRODUCTION):
                completion = await provider.complete(
                    model=side.model,
                    system=side.system_prompt,
                    messages=[{"role": "user", "content": sample.input}],
                    temperature=side.temperature,
                    max_tokens=side.max_tokens,
                )
                answers.append(completion.text)
            calls += time.perf_counter() - started
            started = time.perf_counter()
            model = SentenceTransformer(default_model_path(), device="cpu")
            model.encode(answers, normalize_embeddings=True, show_progress_bar=False)
            scoring += time.perf_counter() - started
    finally:
        await provider.aclose()
    return calls, scoring


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--naive-sample", type=int, default=10)
    args = parser.parse_args()

    with model_double_process(args.latency) as url:
        os.environ["ANTHROPIC_API_KEY"] = "bench"
        os.environ["ANTHROPIC_BASE_URL"] = url
        scorer = Scorer()
        await scorer.warm_up()  # a server has loaded it long before a cycle comes
        items = samples(args.samples)
        started = time.perf_counter()
        result = await run_cycle(spec(items), scorer, concurrency=args.concurrency)
        wall = time.perf_counter() - started

        calls, scoring = await naive_per_query(items[: args.naive_sample], "anthropic")
        scale = args.samples / args.naive_sample
        naive_calls, naive_scoring = calls * scale, scoring * scale

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ideal_calls = args.samples * args.latency / args.concurrency
    print(f"one soak cycle: {args.samples} samples, {args.latency * 1000:.0f} ms model latency")
    print(
        f"  promptship   wall {wall:6.2f} s   model calls {result.model_calls:5d}   "
        f"calls {result.calls_seconds:5.2f} s (ideal {ideal_calls:.2f} s)   "
        f"scoring {result.scoring_seconds:5.2f} s   divergent {result.divergent}"
    )
    naive_wall = naive_calls + naive_scoring
    print(
        f"  naive        wall {naive_wall:6.1f} s   model calls {2 * args.samples:5d}   "
        f"calls {naive_calls:6.1f} s   scoring {naive_scoring:6.1f} s   "
        f"(timed on {args.naive_sample} samples, scaled)"
    )
    print(
        f"  ratios       wall {naive_wall / wall:5.1f}x faster   model calls "
        f"{2 * args.samples / max(result.model_calls, 1):.1f}x fewer (logged production "
        f"answers reused)   calls {naive_calls / max(result.calls_seconds, 1e-9):5.1f}x   "
        f"scoring {naive_scoring / max(result.scoring_seconds, 1e-9):5.1f}x"
    )
    print(f"  peak RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
