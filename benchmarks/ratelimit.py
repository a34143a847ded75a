"""A validation run against a rate-limited model: adaptive concurrency against fixed.

The model double runs in its own process with a token bucket (``--rate`` requests a
second, ``--burst`` at most at once; over it a 429 with ``retry-after`` in whole seconds and
the ``anthropic-ratelimit-*`` headers the real API sends), answering after ``--latency``.
The same runner, store and SDK run one suite of ``--cases`` cases twice, each against a
fresh double (a full bucket), concurrency 16 and the runner's default retries both times:

- fixed: the window held at 16, each call waiting out its own retries in its slot, as a
  semaphore around the SDK's retries did before (the baseline, measured in this run);
- adaptive: the AIMD limiter (``promptship.validation.concurrency``).

For each: wall time, cases answered and errored (retries used up), the 429s the double
sent, and retries (requests beyond one per case). PASS when adaptive answers every case,
has fewer than a tenth of fixed's rejections and is no slower: its time per answered case
at most fixed's, give or take 5% (a case fixed leaves errored is one it did not finish,
not one it did faster; and both are held to the model's rate, so neither can be much
faster than the other, nor than the ideal: the cases beyond the first burst at the rate).

    .venv/bin/python benchmarks/ratelimit.py [--cases 500] [--rate 8] [--burst 8]
        [--latency 0.1] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from unittest import mock

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptship.config import parse_policy
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import DoubleProcess
from promptship.validation import runner as runner_module
from promptship.validation.concurrency import AdaptiveLimiter
from promptship.validation.runner import RunnerSettings, SuiteRunner
from tests.helpers import slack


@dataclass
class Measured:
    label: str
    wall: float
    passed: int
    errored: int
    requests: int
    rejected: int

    @property
    def retries(self) -> int:
        return self.requests - self.passed - self.errored

    @property
    def per_case(self) -> float:
        return self.wall / max(1, self.passed)


def suite(cases: int) -> str:
    return yaml.safe_dump(
        {
            "name": "bench-ratelimit",
            "version": "1.0.0",
            "model": "m",
            "system_prompt": "Echo.",
            "tests": [
                {"input": f"question {i}", "expected": f"question {i}", "type": "contains"}
                for i in range(cases)
            ],
        }
    )


async def measure(
    label: str, core: Promptship, args: argparse.Namespace, *, adaptive: bool
) -> Measured:
    flags = ["--echo", "--latency", str(args.latency), "--rate-limit", str(args.rate)]
    double = DoubleProcess("promptship.testing.model_double", *flags, "--burst", str(args.burst))
    os.environ["ANTHROPIC_BASE_URL"] = double.url
    settings = RunnerSettings(concurrency=args.concurrency, timeout=60)
    runner = SuiteRunner(core, settings=settings)
    limiter = partial(AdaptiveLimiter, adaptive=adaptive)
    try:
        with mock.patch.object(runner_module, "AdaptiveLimiter", limiter):
            started = time.perf_counter()
            run = await runner.execute(await runner.start("bench-ratelimit", "1.0.0", slack("U01")))
            wall = time.perf_counter() - started
    finally:
        await runner.aclose()
        summary = double.stop()
    counts = re.search(r"(\d+) requests, (\d+) rejected", summary)
    assert counts, summary
    requests, rejected = int(counts[1]), int(counts[2])
    if run.errored:  # why: the first errored case's error
        detail = await core.validation_run(run.id)
        why = next(r["error"] for r in detail.results if r.get("error"))
        print(f"    ({label}: {run.errored} errored, the first: {why})")
    return Measured(label, wall, run.passed, run.errored, requests, rejected)


async def benchmark(args: argparse.Namespace) -> None:
    os.environ["ANTHROPIC_API_KEY"] = "bench"
    tmp = Path(tempfile.mkdtemp(prefix="promptship-ratelimit-"))
    db = Database(f"sqlite+aiosqlite:///{tmp / 'bench.db'}")
    await db.upgrade()
    core = Promptship(db, parse_policy("{}"))
    await core.push(parse_prompt(suite(args.cases)), slack("U09"))
    ideal = max(0.0, args.cases - args.burst) / args.rate + args.latency
    print(
        f"{args.cases} cases against a model limited to {args.rate:g} requests/s "
        f"(burst {args.burst}), {args.latency * 1000:.0f} ms latency, concurrency "
        f"{args.concurrency}, {RunnerSettings().max_retries} retries a call; ideal {ideal:.1f} s"
    )
    fixed = await measure("fixed 16 + retries", core, args, adaptive=False)
    adaptive = await measure("adaptive (AIMD)", core, args, adaptive=True)
    for m in (fixed, adaptive):
        print(
            f"    {m.label:<20} {m.wall:7.2f} s   answered {m.passed:4d}   errored {m.errored:3d}"
            f"   rejected (429) {m.rejected:5d}   retries {m.retries:5d}"
            f"   {m.per_case * 1000:6.1f} ms a case"
        )
    fewer = adaptive.rejected * 10 < fixed.rejected
    complete = adaptive.passed == args.cases
    ratio = adaptive.per_case / fixed.per_case
    print(
        f"    adaptive: {adaptive.rejected} rejections against {fixed.rejected} "
        f"(target < a tenth: {'PASS' if fewer else 'FAIL'}); every case answered: "
        f"{'PASS' if complete else 'FAIL'}; time a case {ratio:4.2f}x fixed's "
        f"(target ≤ 1, ±5%: {'PASS' if ratio <= 1.05 else 'FAIL'}); "
        f"{adaptive.wall / ideal:4.2f}x the ideal"
    )
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(benchmark(parser.parse_args()))


if __name__ == "__main__":
    main()
