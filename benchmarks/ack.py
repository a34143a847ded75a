"""Slack ack latency of ``/prompt status``: does the bot answer far inside Slack's 3 s?

Runs ``promptship serve`` (Bolt over HTTP, SQLite) in its own process on loopback, with the
Slack Web API double and the model double in processes of their own, as in production where
Slack and the model are elsewhere, and sends signed slash commands, 32 at a time. Prints p50/p99 of the time to the HTTP 200 ack and
the ratio to a bare Starlette endpoint on the same server; then the same while a 500-case
validation run, scored with the real MiniLM model against the model double (100 ms latency),
is in progress in the server process (target p99 < 300 ms).

    .venv/bin/python benchmarks/ack.py [--requests 640] [--concurrency 32] [--cases 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptship.config import parse_policy
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import DoubleProcess, ServeProcess
from tests.helpers import slack
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, sign

POLICY = parse_policy("channel: C0BENCH\nroles: {approvers: [U01, U02]}\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def fire(base: str, requests: int, concurrency: int, make: object) -> list[float]:
    """Send ``requests`` requests, ``concurrency`` at a time, over kept-alive connections;
    aiohttp rather than httpx because the load generator shares the machine's cores."""
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector) as client:

        async def one(i: int) -> None:
            async with limit:
                method, path, body, headers = make(i)  # type: ignore[operator]
                started = time.perf_counter()
                async with client.request(method, path, data=body, headers=headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                assert response.status == 200, response.status

        await asyncio.gather(*(one(i) for i in range(requests)))
    return latencies


def status_command(slack_url: str):  # type: ignore[no-untyped-def]
    def make(i: int) -> tuple[str, str, str, dict[str, str]]:
        body = urlencode(
            {
                "command": "/prompt",
                "text": "status",
                "user_id": "U01",
                "channel_id": "C0BENCH",
                "team_id": "T0001",
                "response_url": f"{slack_url}/response/b{i}",
                "trigger_id": "1.2.3",
            }
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(body)}
        return "POST", "/slack/events", body, headers

    return make


def bare(i: int) -> tuple[str, str, str, dict[str, str]]:
    return "GET", "/healthz", "", {}  # a bare Starlette endpoint of the same server


def report(name: str, ack: list[float], base: list[float]) -> float:
    p50, p99 = percentile(ack, 0.5) * 1000, percentile(ack, 0.99) * 1000
    b50, b99 = percentile(base, 0.5) * 1000, percentile(base, 0.99) * 1000
    print(
        f"{name:<42} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms   (bare p50 {b50:6.1f} ms, p99 {b99:6.1f} ms)"
        f"  ratio p50 {p50 / b50:5.1f}x  p99 {p99 / b99:5.1f}x"
    )
    return p99


async def queue_run(db_url: str, cases: int) -> int:
    spec = parse_prompt(
        yaml.safe_dump(
            {
                "name": "bench",
                "version": "1.0.0",
                "model": "m",
                "system_prompt": "Answer.",
                "tests": [
                    {
                        "input": f"question {i}?",
                        "expected": f"an answer about topic {i % 37}",
                        "type": "score",
                        "threshold": 0.5,
                    }
                    for i in range(cases)
                ],
            }
        )
    )
    db = Database(db_url)
    core = Promptship(db, POLICY)
    await core.push(spec, slack("U09"))
    run = await core.queue_validation_run("bench", "1.0.0", slack("U01"))
    await db.dispose()
    return run.id


async def run_progress(db_url: str, run_id: int) -> tuple[str, int]:
    db = Database(db_url)
    run = await Promptship(db, POLICY).validation_run(run_id)
    await db.dispose()
    return run.state, run.passed + run.failed + run.errored


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cases", type=int, default=500)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="promptship-ack-"))
    (tmp / "promptship.yaml").write_text(yaml.safe_dump(POLICY.model_dump(mode="json")))
    db_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    slack = DoubleProcess("promptship.testing.slack_double", "--token", BOT_TOKEN)
    model = DoubleProcess("promptship.testing.model_double", "--latency", "0.1")
    server = ServeProcess(
        {
            "PROMPTSHIP_DATABASE_URL": db_url,
            "PROMPTSHIP_CONFIG": str(tmp / "promptship.yaml"),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.url + "/api/",
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": model.url,
        },
        tmp / "serve.log",
    )
    try:
        for _ in range(2):  # warm-up: imports, first connections
            asyncio.run(fire(server.url, 64, args.concurrency, status_command(slack.url)))
        base = asyncio.run(fire(server.url, args.requests, args.concurrency, bare))
        ack = asyncio.run(
            fire(server.url, args.requests, args.concurrency, status_command(slack.url))
        )
        print(
            f"{args.requests} requests, {args.concurrency} concurrent; server, Slack double and "
            f"model double each in their own process; SQLite; {os.cpu_count()} CPUs"
        )
        report("/prompt status, idle server", ack, base)

        run_id = asyncio.run(queue_run(db_url, args.cases))
        while asyncio.run(run_progress(db_url, run_id))[1] < 20:  # the worker is scoring
            time.sleep(0.1)
        base = asyncio.run(fire(server.url, args.requests, args.concurrency, bare))
        ack = asyncio.run(
            fire(server.url, args.requests, args.concurrency, status_command(slack.url))
        )
        state, done = asyncio.run(run_progress(db_url, run_id))
        p99 = report(f"/prompt status, during a {args.cases}-case scored run", ack, base)
        print(
            f"(the run was {state} with {done} of {args.cases} cases scored when the sample ended)"
        )
        print(f"target p99 < 300 ms during the run: {'PASS' if p99 < 300 else 'FAIL'}")
    finally:
        server.stop()
        model.stop()
        print("slack double:", slack.stop().strip().splitlines()[-1:])


if __name__ == "__main__":
    main()
