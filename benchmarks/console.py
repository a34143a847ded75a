"""Console scale: does every console page answer fast on a big store?

Builds the big SQLite store of ``benchmarks/store.py`` (10,000 prompts, 100,000 versions,
1,000,000 audit events; its builder, not a copy), adds through the real services one prompt
soaking in staging with settled cycles (one diverged, one missed) and an open production
request, serves the real app in a process of its own (workers off), signs in once through
the Slack double, then times ``--requests`` GETs of each page one after another, as a
person clicking through the console: the overview, a prompt, a version, a diff (random
prompts), the soak, the request, the audit log (first page and a keyset page near the start
of the log) and the health page. ``/healthz`` on the same server is the baseline. Target:
each page's p99 under 100 ms. Then the same pages again with ``--concurrency`` requests in
flight at once and no pause between them (a saturation test on one server process, its
client on the same machine): p50, p99 and pages per second, for information.

    .venv/bin/python benchmarks/console.py [--prompts 10000] [--events 1000000]
        [--requests 200] [--concurrency 4] [--keep PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import fill, migrate

from promptship.clock import ManualClock
from promptship.config import Policy, Settings, parse_policy
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.helpers import REQUESTER, slack, start_staging_soak

TARGET_MS = 100.0
TEAM = "T0BENCH"
CLIENT_ID = "1000.2000"
CLIENT_SECRET = "oidc-secret-bench"
SOAKING = "soaking-agent"
POLICY = """
channel: C0BENCH
roles: {approvers: [U01, U02], oncall: [U03]}
environments:
  staging: {min_pass_rate: 0.8}
  production: {approvals: 2, soak: 10s, soak_interval: 1s, max_divergence: 0.1}
"""


async def cycle(core: Promptship, soak_id: int, n: int, result: CycleResult) -> str | None:
    """Settle cycle ``n`` as a replica's soak engine would."""
    assert await core.claim_soak_cycle(soak_id, n, "replica-a", timedelta(seconds=30))
    spec = await core.soak_cycle_spec(soak_id, n)
    return await core.finish_soak_cycle(spec, "replica-a", result)


async def soak_and_request(db_url: str, policy: Policy, name: str = SOAKING) -> tuple[int, int]:
    """``name`` 1.0.0 soaking in staging with cycles 1, 2, 4 and 5 settled and 3 missed, a
    signed checkpoint of the audit chain, and an open production request for it: (soak id,
    request id). (A diverged cycle ends a soak, so a running one has none.)"""
    db = Database(db_url)
    try:
        clock = ManualClock(datetime.now(UTC) - timedelta(seconds=8))
        core = Promptship(db, policy, clock)
        soak_id = await start_staging_soak(core, name, "1.0.0")
        results = {
            1: CycleResult(40, divergent=1),
            2: CycleResult(40, divergent=3),
            4: CycleResult(38, divergent=0),
            5: CycleResult(41, divergent=2),
        }
        for n, result in results.items():
            clock.advance(timedelta(seconds=1))
            await cycle(core, soak_id, n, result)
        await core.checkpoint_audit("benchmark")  # the audit page checks the chain from here
        request = await core.request_promotion(name, "1.0.0", "production", slack(REQUESTER))
        await core.approve(request.id, slack("U01"))
        return soak_id, request.id
    finally:
        await db.dispose()


def settings(db_url: str, slack_api: str) -> Settings:
    return Settings(
        PROMPTSHIP_DATABASE_URL=db_url,
        SLACK_API_URL=slack_api,
        SLACK_CLIENT_ID=CLIENT_ID,
        SLACK_CLIENT_SECRET=CLIENT_SECRET,
        PROMPTSHIP_SLACK_TEAM_ID=TEAM,
    )


def _serve(db_url: str, slack_api: str, urls: Any, stop: Any) -> None:
    from promptship.server import create_app
    from promptship.testing.serve import ServerThread

    app = create_app(settings(db_url, slack_api), parse_policy(POLICY), workers=False)
    with ServerThread(app) as server:
        urls.put(server.url)
        stop.wait()


class ConsoleProcess:
    """The real app (console and all, workers off) served in a child process: the load
    generator does not share its GIL."""

    def __init__(self, db_url: str, slack_api: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        urls = ctx.Queue()
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=_serve, args=(db_url, slack_api, urls, self.stop))
        self.proc.start()
        self.url: str = urls.get(timeout=120)

    def close(self) -> None:
        self.stop.set()
        self.proc.join(timeout=30)


def sign_in(url: str, double: SlackDouble, user: str = "U0VIEW") -> httpx.Cookies:
    """/login → the Slack double's authorize page → /auth/callback: the session cookie."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as client:
        done = double.sign_in(client, user, team=TEAM, name="Vera Viewer")
        if done.status_code != 303:
            raise RuntimeError(f"signing in failed: {done.status_code} {done.text[:200]}")
        return client.cookies


async def load(url: str, cookies: httpx.Cookies, paths: list[str], concurrency: int) -> list[float]:
    """GET each path, ``concurrency`` at a time: each one's latency in ms."""
    pending = list(reversed(paths))
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, cookies=cookies, limits=limits, timeout=60) as c:

        async def worker() -> None:
            while pending:
                path = pending.pop()
                start = time.perf_counter()
                response = await c.get(path)
                latencies.append((time.perf_counter() - start) * 1000)
                if response.status_code != 200:
                    raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def pages(
    prompts: int, per_prompt: int, events: int, soak_id: int, request_id: int, n: int
) -> dict[str, list[str]]:
    """Each page's request paths, ``n`` of each (random prompts where a page names one)."""
    rng = random.Random(7)

    def name() -> str:
        return f"prompt-{rng.randrange(prompts):05d}"

    last = per_prompt - 1
    return {
        "overview /": ["/"] * n,
        "prompt": [f"/prompts/{name()}" for _ in range(n)],
        "version": [f"/prompts/{name()}/1.{rng.randrange(per_prompt)}.0" for _ in range(n)],
        "diff": [f"/prompts/{name()}/diff/1.{last - 1}.0/1.{last}.0" for _ in range(n)],
        "soak": [f"/soaks/{soak_id}"] * n,
        "request": [f"/requests/{request_id}"] * n,
        "audit": ["/audit"] * n,
        "audit deep": [f"/audit?before={max(2, events // 1000)}"] * n,
        "health": ["/health"] * n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--versions-per-prompt", type=int, default=10)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per page")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the big store at this path")
    args = parser.parse_args()
    if min(args.prompts, args.events, args.requests, args.concurrency) < 1:
        parser.error("--prompts, --events, --requests and --concurrency must be at least 1")
    if args.versions_per_prompt < 2:
        parser.error("--versions-per-prompt must be at least 2 (the diff page needs two)")

    workdir = Path(tempfile.mkdtemp(prefix="promptship-console-bench-"))
    path = args.keep or workdir / "console.db"
    if not path.exists():
        started = time.perf_counter()
        asyncio.run(migrate(path))
        fill(path, args.prompts, args.versions_per_prompt, args.events)
        print(f"built the store in {time.perf_counter() - started:.0f} s")
    else:
        asyncio.run(migrate(path))  # a kept store built by an older promptship
    db_url = f"sqlite+aiosqlite:///{path}"
    print(
        f"store {path}: {args.prompts:,} prompts, "
        f"{args.prompts * args.versions_per_prompt:,} versions, {args.events:,} audit events "
        f"({path.stat().st_size / 2**20:.0f} MiB)"
    )
    seeded = asyncio.run(
        soak_and_request(db_url, parse_policy(POLICY), f"{SOAKING}-{int(time.time())}")
    )
    soak_id, request_id = seeded

    with SlackDouble(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as double:
        server = ConsoleProcess(db_url, double.api_url)
        try:
            cookies = sign_in(server.url, double)
            plan = pages(
                args.prompts,
                args.versions_per_prompt,
                args.events,
                soak_id,
                request_id,
                args.requests,
            )
            for paths in plan.values():  # warm the pool, the templates and the page cache
                asyncio.run(load(server.url, cookies, paths[:10], 1))
            baseline = asyncio.run(load(server.url, cookies, ["/healthz"] * args.requests, 1))
            timed = {
                page: asyncio.run(load(server.url, cookies, paths, 1))
                for page, paths in plan.items()
            }
            loaded: dict[str, tuple[list[float], float]] = {}
            for page, paths in plan.items():
                started = time.perf_counter()
                samples = asyncio.run(load(server.url, cookies, paths, args.concurrency))
                loaded[page] = samples, len(paths) / (time.perf_counter() - started)
        finally:
            server.close()

    base50 = percentile(baseline, 0.5)
    print(
        f"\n{args.requests} requests per page, one at a time, SQLite, {os.cpu_count()} CPUs; "
        f"target p99 < {TARGET_MS:.0f} ms"
    )
    print(f"  {'page':12} {'p50 ms':>8} {'p99 ms':>8} {'p50/base':>9}")
    print(f"  {'/healthz':12} {base50:8.1f} {percentile(baseline, 0.99):8.1f} {1:9.1f}  (baseline)")
    failed = []
    for page, samples in timed.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        verdict = "PASS" if p99 < TARGET_MS else "FAIL"
        if verdict == "FAIL":
            failed.append(page)
        print(f"  {page:12} {p50:8.1f} {p99:8.1f} {p50 / base50:9.1f}  {verdict}")
    print(f"\n{args.concurrency} in flight at once, no pause (for information)")
    print(f"  {'page':12} {'p50 ms':>8} {'p99 ms':>8} {'pages/s':>8}")
    for page, (samples, rate) in loaded.items():
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(f"  {page:12} {p50:8.1f} {p99:8.1f} {rate:8.1f}")
    print(f"\n{'FAIL: ' + ', '.join(failed) if failed else 'every page PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
