"""Soak cycles at production scale: 10,000 sampled queries at 100 ms model latency.

Each cycle runs through the real code (``run_cycle``: the anthropic SDK against the model
double in its own process, the MiniLM scorer), every sample carrying its logged production
answer, so only the staging prompt is called, in a fresh process of its own so that its
peak RSS is its own. Timed, in the same run:

- the pipeline (samples read a page at a time, pairs scored in batches while the calls go
  on) on 1,000 samples and on ``--samples``;
- today's design before the pipeline (every call first, then every pair scored in one
  pass; all samples held) on ``--samples``: the same code with one page and one batch;
- the naive design (calls one after another, the production prompt re-run for every
  query, the embedding model loaded for every pair), timed on a few samples and scaled.

Targets: the pipeline's wall time within 1.15x the ideal ``samples x latency /
concurrency``, and its peak RSS on ``--samples`` within 1.2x of its peak RSS on 1,000 (the
cycle's process and the scorer's process it started, added).

    .venv/bin/python benchmarks/soak.py [--samples 10000] [--latency 0.1] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.validation import model_double_process
from promptship.services.soak_spec import CycleSpec, Sample, Side, TrafficWindow
from promptship.soak.cycle import run_cycle
from promptship.validation.providers import make_provider
from promptship.validation.scoring import Scorer, default_model_path

STAGING = Side("1.1.0", "anthropic", "claude-bench", 0.0, 200, "You are a concise agent.")
PRODUCTION = Side("1.0.0", "anthropic", "claude-bench", 0.0, 200, "You are a helpful agent.")
#: samples per page, as the store hands them out
PAGE = 500
WALL_TARGET = 1.15
RSS_TARGET = 1.2


def sample(i: int) -> Sample:
    question = f"customer question {i} about order {i * 7 % 1000}"
    return Sample(question, f"Answer: {question}", PRODUCTION.version)


def spec(n: int, held: bool) -> CycleSpec:
    """``n`` samples the spec holds, or a window of ``n`` logged queries read in pages."""
    return CycleSpec(
        soak_id=1,
        cycle=1,
        kind="staging-shadow",
        prompt="bench",
        candidate=STAGING,
        baseline=PRODUCTION,
        samples=[sample(i) for i in range(n)] if held else [],
        min_samples=1,
        similarity=0.85,
        max_divergence=0.1,
        traffic=None if held else TrafficWindow(1, "production", None, n, n),
    )


@dataclass(frozen=True)
class Timed:
    wall: float
    calls: float
    scoring: float
    model_calls: int
    divergent: int
    rss_mib: float


def _cycle_in_child(n: int, design: str, url: str, concurrency: int, out: object) -> None:
    os.environ["ANTHROPIC_API_KEY"] = "bench"
    os.environ["ANTHROPIC_BASE_URL"] = url

    async def go() -> Timed:
        scorer = Scorer()
        await scorer.warm_up()  # a server has loaded it long before a cycle comes
        if design == "pipeline":
            cycle = spec(n, held=False)

            async def pages(_: CycleSpec) -> AsyncIterator[list[Sample]]:
                for start in range(0, n, PAGE):  # made as read, as the store's pages are
                    yield [sample(i) for i in range(start, min(n, start + PAGE))]

            started = time.perf_counter()
            result = await run_cycle(cycle, scorer, pages=pages, concurrency=concurrency)
        else:  # before the pipeline: every sample held, every pair scored after the calls
            cycle = spec(n, held=True)
            started = time.perf_counter()
            result = await run_cycle(cycle, scorer, concurrency=concurrency, batch=n)
        wall = time.perf_counter() - started
        scorer.close()  # its process ends: its peak RSS counts with the cycle's
        rss = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        ) / 1024
        return Timed(
            wall,
            result.calls_seconds,
            result.scoring_seconds,
            result.model_calls,
            result.divergent,
            rss,
        )

    out.put(asyncio.run(go()))  # type: ignore[attr-defined]


def timed(n: int, design: str, url: str, concurrency: int) -> Timed:
    """One cycle in a fresh process: its figures and its own peak RSS."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_cycle_in_child, args=(n, design, url, concurrency, out))
    child.start()
    found: Timed = out.get(timeout=3600)
    child.join()
    return found


async def naive_per_query(items: list[Sample], provider_kind: str) -> tuple[float, float]:
    """Per query: call staging, re-run production, load the model, score. (calls, scoring)"""
    from sentence_transformers import SentenceTransformer

    provider = make_provider(provider_kind)
    calls = scoring = 0.0
    try:
        for item in items:
            started = time.perf_counter()
            answers = []
            for side in (STAGING, PRODUCTION):
                completion = await provider.complete(
                    model=side.model,
                    system=side.system_prompt,
                    messages=[{"role": "user", "content": item.input}],
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--naive-sample", type=int, default=10)
    args = parser.parse_args()
    if min(args.samples, args.concurrency, args.naive_sample) < 1 or args.latency <= 0:
        parser.error("--samples, --concurrency and --naive-sample must be at least 1")

    with model_double_process(args.latency) as url:
        small = timed(min(1000, args.samples), "pipeline", url, args.concurrency)
        big = timed(args.samples, "pipeline", url, args.concurrency)
        before = timed(args.samples, "before", url, args.concurrency)
        os.environ["ANTHROPIC_API_KEY"] = "bench"
        os.environ["ANTHROPIC_BASE_URL"] = url
        items = [sample(i) for i in range(args.naive_sample)]
        calls, scoring = asyncio.run(naive_per_query(items, "anthropic"))
    scale = args.samples / args.naive_sample
    naive_calls, naive_scoring = calls * scale, scoring * scale
    naive_wall = naive_calls + naive_scoring

    def ideal(n: int) -> float:
        return n * args.latency / args.concurrency

    print(
        f"soak cycles at {args.latency * 1000:.0f} ms model latency, concurrency "
        f"{args.concurrency}, production answers logged; {os.cpu_count()} CPUs"
    )
    print(f"  {'':34} {'wall s':>7} {'/ideal':>7} {'calls s':>8} {'scoring s':>9} {'RSS MiB':>8}")
    for label, n, found in (
        (f"pipeline, {min(1000, args.samples):,} samples", min(1000, args.samples), small),
        (f"pipeline, {args.samples:,} samples", args.samples, big),
        (f"before the pipeline, {args.samples:,}", args.samples, before),
    ):
        print(
            f"  {label:34} {found.wall:7.2f} {found.wall / ideal(n):7.2f} "
            f"{found.calls:8.2f} {found.scoring:9.2f} {found.rss_mib:8,.0f}"
        )
    print(
        f"  {'naive (scaled from ' + str(args.naive_sample) + ')':34} {naive_wall:7.1f} "
        f"{naive_wall / ideal(args.samples):7.1f} {naive_calls:8.1f} {naive_scoring:9.1f}"
    )
    print(
        f"\n  model calls {big.model_calls:,} for {args.samples:,} samples "
        f"({2 * args.samples / max(big.model_calls, 1):.1f}x fewer than re-running production); "
        f"divergent {big.divergent} (before the pipeline: {before.divergent})"
    )
    print(
        f"  pipeline vs before: {before.wall / big.wall:.2f}x faster; "
        f"vs naive: {naive_wall / big.wall:.0f}x faster"
    )
    wall_ratio = big.wall / ideal(args.samples)
    rss_ratio = big.rss_mib / small.rss_mib
    failed = []
    for what, got, target in (
        ("wall / ideal", wall_ratio, WALL_TARGET),
        (f"peak RSS at {args.samples:,} / at 1,000", rss_ratio, RSS_TARGET),
    ):
        verdict = "PASS" if got <= target else "FAIL"
        if verdict == "FAIL":
            failed.append(what)
        print(f"  {what}: {got:.2f} (target <= {target}) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
