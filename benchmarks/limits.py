"""Request body caps under a flood: does memory stay flat and do probes stay fast?

``promptship serve`` runs in its own process (SQLite, Slack on, the Slack Web API double in
a process of its own). Measures its idle RSS and ``/healthz`` latency first (the baseline of
this run); then ``--clients`` clients at once stream 300 MB bodies, generated on the fly and
never held in memory, half to ``/slack/events`` (unsigned) and half to ``/v1/traffic`` (with
a write token), half of each declaring ``Content-Length`` and half chunked, over and over
for ``--seconds``. Prints the server's peak RSS (psutil, sampled every 20 ms) against idle
(target under 1.2x) and ``/healthz`` p50/p99 during the flood against idle (target p99 under
100 ms, a tenth of a typical probe timeout). Then times ``audit verify`` over ``--events``
audit events (1,000,000 by default) with the keyed HMAC-SHA256 chain against the old plain
SHA-256 chain, each built the same way in this run (target: the key costs at most 1.5x).

    .venv/bin/python benchmarks/limits.py [--clients 8] [--seconds 15] [--mb 300]
        [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptship.testing.serve import DoubleProcess, ServeProcess
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET

WRITE_TOKEN = "bench-write-token-0123456789"
CHUNK = b"x" * 65536
POLICY = "channel: C0BENCH\nroles: {approvers: [U01, U02]}\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RssSampler:
    """The server process's resident set size, sampled in a thread of our own."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.process.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def probe(url: str, until: float, every: float = 0.01) -> list[float]:
    """GET /healthz one after the other until ``until``; the latency of each."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(url) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            async with http.get("/healthz") as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(every)
    return latencies


async def flood(
    url: str, path: str, declared: bool, size: int, until: float, outcomes: Counter[str]
) -> int:
    """Send ``size``-byte bodies to ``path`` one after the other until ``until``; returns
    the bytes the client got to write. Each outcome (status or error) is counted."""
    written = 0
    headers = {"Content-Type": "application/json"}
    if path.startswith("/v1/"):
        headers["Authorization"] = f"Bearer {WRITE_TOKEN}"
    if declared:
        headers["Content-Length"] = str(size)

    async def body() -> AsyncIterator[bytes]:
        nonlocal written
        sent = 0
        while sent < size:
            piece = CHUNK[: size - sent]
            sent += len(piece)
            written += len(piece)
            yield piece

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, timeout=timeout) as http:
        while time.monotonic() < until:
            kind = "declared" if declared else "chunked"
            try:
                async with http.post(path, data=body(), headers=headers) as response:
                    await response.read()
                    outcomes[f"{path} {kind}: {response.status}"] += 1
            except (aiohttp.ClientError, OSError) as exc:
                outcomes[f"{path} {kind}: cut off ({type(exc).__name__})"] += 1
    return written


def body_limits_section(server: ServeProcess, args: argparse.Namespace) -> None:
    size = args.mb * 10**6
    idle_until = time.monotonic() + 3
    with RssSampler(server.pid) as idle_rss:
        idle_probe = asyncio.run(probe(server.url, idle_until))
    idle = max(idle_rss.samples)

    async def loaded() -> tuple[list[float], list[int], Counter[str]]:
        until = time.monotonic() + args.seconds
        outcomes: Counter[str] = Counter()
        senders = [
            flood(
                server.url,
                "/slack/events" if i % 2 == 0 else "/v1/traffic",
                declared=(i // 2) % 2 == 0,
                size=size,
                until=until,
                outcomes=outcomes,
            )
            for i in range(args.clients)
        ]
        latencies, *written = await asyncio.gather(probe(server.url, until), *senders)
        return latencies, written, outcomes

    with RssSampler(server.pid) as load_rss:
        load_probe, written, outcomes = asyncio.run(loaded())
    peak = max(load_rss.samples)
    requests = sum(outcomes.values())

    print(
        f"{args.clients} clients streaming {args.mb} MB bodies for {args.seconds:g} s "
        f"(half to /slack/events, half to /v1/traffic; half declared, half chunked); "
        f"server in its own process; SQLite; {os.cpu_count()} CPUs"
    )
    for outcome, count in sorted(outcomes.items()):
        print(f"    {count:5d} x {outcome}")
    print(
        f"    the clients got to write {sum(written) / 2**20:,.0f} MiB in {requests} requests "
        f"({sum(written) / max(requests, 1) / 2**20:.1f} MiB each, of {size / 2**20:,.0f})"
    )
    ratio = peak / idle
    print(
        f"server RSS: idle {idle / 2**20:.0f} MiB (baseline), peak during the flood "
        f"{peak / 2**20:.0f} MiB; ratio {ratio:.2f}x   target < 1.2x: "
        f"{'PASS' if ratio < 1.2 else 'FAIL'}"
    )
    i50, i99 = percentile(idle_probe, 0.5) * 1000, percentile(idle_probe, 0.99) * 1000
    l50, l99 = percentile(load_probe, 0.5) * 1000, percentile(load_probe, 0.99) * 1000
    print(
        f"/healthz: idle p50 {i50:.1f} ms p99 {i99:.1f} ms (baseline, {len(idle_probe)} probes); "
        f"during p50 {l50:.1f} ms p99 {l99:.1f} ms ({len(load_probe)} probes); "
        f"ratio p50 {l50 / i50:.1f}x p99 {l99 / i99:.1f}x   target p99 < 100 ms: "
        f"{'PASS' if l99 < 100 else 'FAIL'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--mb", type=int, default=300, help="size of each body in MB")
    parser.add_argument("--events", type=int, default=1_000_000, help="audit events to verify")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="promptship-limits-"))
    (tmp / "promptship.yaml").write_text(POLICY)
    slack = DoubleProcess("promptship.testing.slack_double", "--token", BOT_TOKEN)
    server = ServeProcess(
        {
            "PROMPTSHIP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}",
            "PROMPTSHIP_CONFIG": str(tmp / "promptship.yaml"),
            "PROMPTSHIP_API_TOKENS": f"write:{WRITE_TOKEN}",
            "PROMPTSHIP_LOG_LEVEL": "WARNING",
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.url + "/api/",
        },
        tmp / "serve.log",
    )
    try:
        body_limits_section(server, args)
    finally:
        server.stop()
        slack.stop()
    audit_verify_section(args.events, tmp)


def audit_verify_section(events: int, workdir: Path) -> None:
    """``audit verify`` of the keyed chain against the plain SHA-256 chain it replaced."""
    from benchmarks.store import verify_rates

    sha256, keyed = asyncio.run(verify_rates(events, workdir))
    ratio = sha256 / keyed
    print(f"\naudit verify, {events:,} events (SQLite):")
    print(f"  SHA-256 chain (baseline): {sha256:,.0f} events/s ({events / sha256:.1f} s)")
    print(f"  keyed HMAC-SHA256 chain:  {keyed:,.0f} events/s ({events / keyed:.1f} s)")
    verdict = "PASS" if ratio <= 1.5 else "FAIL"
    print(f"  keyed costs {ratio:.2f}x the baseline's time (target <= 1.5x): {verdict}")


if __name__ == "__main__":
    main()
