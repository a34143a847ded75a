"""The runtime API: does fetching the live prompt cost little, and does a rollback reach
running apps in about a second?

``promptship serve`` runs in its own process (SQLite). Prints, in one run:
(a) requests/s and p50/p99 of ``GET /v1/prompts/{name}/environments/production`` at 32
    concurrent connections, and the ratio to a bare endpoint of the same server
    (``/healthz``) under the same load (target ≥ 0.5);
(b) the median of a cached ``PromptClient.get`` in µs;
(c) rollback propagation: 50 ``PromptClient``s watch production; ``/prompt rollback`` is sent
    to the app as Slack would (signed slash command), and the time until each client serves
    the previous version is measured (target p99 ≤ 1 s, against 60 s for a TTL cache).

    .venv/bin/python benchmarks/api.py [--requests 4000] [--concurrency 32] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptship.client import PromptClient
from promptship.config import parse_policy
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import ServeProcess
from promptship.testing.slack_double import SlackDouble
from tests.conftest import prompt_yaml
from tests.helpers import case_results, slack
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, sign

POLICY = "channel: C0BENCH\nroles: {approvers: [U01, U02], oncall: [U03]}\n" + (
    "environments: {production: {approvals: 2, soak: 0s}}\n"
)
NAME = "customer-support"
TOKEN = "bench-read-token-0123456789"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(url: str, path: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                async with session.get(path) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


async def prepare(db_url: str) -> None:
    db = Database(db_url)
    await db.upgrade()
    core = Promptship(db, parse_policy(POLICY))
    for version in ("1.0.0", "1.1.0"):
        await core.push(
            parse_prompt(prompt_yaml(NAME, version, system_prompt=f"v{version}")), slack("U09")
        )
        await core.record_validation_run(NAME, version, case_results(10), slack("U04"))
        await core.request_promotion(NAME, version, "staging", slack("U04"))
        request = await core.request_promotion(NAME, version, "production", slack("U04"))
        await core.approve(request.id, slack("U01"))
        await core.approve(request.id, slack("U02"))
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="promptship-api-"))
    db_url = f"sqlite+aiosqlite:///{tmp / 'api.db'}"
    (tmp / "promptship.yaml").write_text(POLICY)
    asyncio.run(prepare(db_url))
    with SlackDouble(token=BOT_TOKEN) as slack:
        server = ServeProcess(
            {
                "PROMPTSHIP_DATABASE_URL": db_url,
                "PROMPTSHIP_CONFIG": str(tmp / "promptship.yaml"),
                "PROMPTSHIP_API_TOKENS": f"runtime:bench-app:{TOKEN}",
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack.api_url,
            },
            tmp / "serve.log",
        )
        try:
            fetch_path = f"/v1/prompts/{NAME}/environments/production"
            asyncio.run(load(server.url, fetch_path, 200, args.concurrency))  # warm-up
            bare_time, bare = asyncio.run(
                load(server.url, "/healthz", args.requests, args.concurrency)
            )
            fetch_time, fetched = asyncio.run(
                load(server.url, fetch_path, args.requests, args.concurrency)
            )
            bare_rps, fetch_rps = args.requests / bare_time, args.requests / fetch_time
            ratio = fetch_rps / bare_rps
            print(
                f"(a) {args.requests} requests, {args.concurrency} concurrent, SQLite, {os.cpu_count()} CPUs"
            )
            print(
                f"    fetch endpoint  {fetch_rps:7.0f} req/s   p50 {percentile(fetched, 0.5) * 1000:6.1f} ms"
                f"   p99 {percentile(fetched, 0.99) * 1000:6.1f} ms"
            )
            print(
                f"    bare /healthz   {bare_rps:7.0f} req/s   p50 {percentile(bare, 0.5) * 1000:6.1f} ms"
                f"   p99 {percentile(bare, 0.99) * 1000:6.1f} ms"
            )
            print(f"    ratio {ratio:.2f}   target ≥ 0.5: {'PASS' if ratio >= 0.5 else 'FAIL'}")

            with PromptClient(server.url, TOKEN, wait=30) as one:
                one.get(NAME, "production")
                samples = []
                for _ in range(20_000):
                    started = time.perf_counter_ns()
                    one.get(NAME, "production")
                    samples.append(time.perf_counter_ns() - started)
            print(f"(b) cached client.get median {statistics.median(samples) / 1000:.1f} µs")

            clients = [PromptClient(server.url, TOKEN, wait=30) for _ in range(args.clients)]
            try:
                for client in clients:
                    assert client.get(NAME, "production").version == "1.1.0"
                time.sleep(1.0)  # every watch is parked in its long-poll
                arrived: list[float] = []
                done = threading.Event()

                def observe(client: PromptClient) -> None:
                    while client.get(NAME, "production").version != "1.0.0":
                        time.sleep(0.002)
                    arrived.append(time.perf_counter())
                    if len(arrived) == len(clients):
                        done.set()

                watchers = [threading.Thread(target=observe, args=(c,)) for c in clients]
                for thread in watchers:
                    thread.start()
                body = urlencode(
                    {
                        "command": "/prompt",
                        "text": f"rollback {NAME} production",
                        "user_id": "U03",
                        "channel_id": "C0BENCH",
                        "team_id": "T0001",
                        "response_url": slack.response_url("rollback"),
                        "trigger_id": "1.2.3",
                    }
                )
                sent = time.perf_counter()
                ack = httpx.post(
                    f"{server.url}/slack/events",
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
                )
                assert ack.status_code == 200, ack.text
                assert done.wait(30), f"only {len(arrived)} of {len(clients)} clients switched"
                for thread in watchers:
                    thread.join()
            finally:
                for client in clients:
                    client._stop.set()
            delays = [t - sent for t in arrived]
            p99 = percentile(delays, 0.99)
            print(
                f"(c) rollback from /prompt to {len(clients)} watching clients: "
                f"p50 {percentile(delays, 0.5) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
                f"max {max(delays) * 1000:.0f} ms   target p99 ≤ 1 s: {'PASS' if p99 <= 1 else 'FAIL'}"
                f"   (a 60 s TTL cache: up to 60,000 ms)"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
