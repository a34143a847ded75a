"""Store scale: do ``status`` and ``history`` stay fast on a big SQLite database?

Builds a migrated SQLite store with 10,000 prompts, 100,000 versions (each prompt live in
staging and production, with its deployment history) and 1,000,000 audit events in one
valid hash chain, the events of all prompts interleaved as a busy team's would be. Then
times, through the real services, ``status`` for one prompt and ``history`` (the first
page), each on random prompts, and the same queries on an empty database (one prompt,
its versions and events only): the ratio shows what the size costs. Target: each median
under 50 ms on the big store. Optionally (``--verify``) times ``audit verify`` over the
whole chain, and ``verify_rates`` compares the keyed (HMAC-SHA256) chain with the old plain
SHA-256 one over the same number of events, in the same run.

    .venv/bin/python benchmarks/store.py [--prompts 10000] [--versions-per-prompt 10]
        [--events 1000000] [--queries 300] [--verify] [--keep PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptship.auditkeys import AuditKey, parse_keys
from promptship.config import Policy
from promptship.services import Promptship
from promptship.services.audit import GENESIS, event_hash
from promptship.store.db import Database

BENCH_KEY = "bench:" + "b" * 44

TARGET_MS = 50.0
START = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = ("version.registered", "request.created", "request.approved", "deployment.changed")
#: the first request id the filled events name
REQUEST_IDS = 10_000_000


def stamp(at: datetime) -> str:
    """How SQLAlchemy's DateTime stores a UTC time in SQLite."""
    return at.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def migrate(path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.upgrade()
    await db.dispose()


def fill(path: Path, prompts: int, per_prompt: int, events: int, seed: int = 1) -> None:
    """Bulk-load rows shaped exactly as the services write them (one transaction)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    names = [f"prompt-{i:05d}" for i in range(prompts)]
    with conn:
        conn.executemany(
            "INSERT INTO prompts (id, name, created_at, created_by) VALUES (?, ?, ?, ?)",
            ((i + 1, name, stamp(START), "U09") for i, name in enumerate(names)),
        )
        content = json.dumps({"model": "claude-sonnet-4-5", "system_prompt": "You help."})

        def versions() -> object:
            for p in range(prompts):
                for v in range(per_prompt):
                    status = (
                        "production"
                        if v == per_prompt - 1
                        else "staging"
                        if v == per_prompt - 2
                        else "deprecated"
                    )
                    yield (
                        p * per_prompt + v + 1,
                        p + 1,
                        f"1.{v}.0",
                        status,
                        f"{p:032x}{v:032x}",
                        "U09",
                        stamp(START + timedelta(minutes=v)),
                        "claude-sonnet-4-5",
                        "anthropic",
                        0.7,
                        500,
                        f"You are support agent {p}.{v}.",
                        content,
                    )

        conn.executemany(
            "INSERT INTO prompt_versions (id, prompt_id, version, status, content_hash, author,"
            " created_at, model, provider, temperature, max_tokens, system_prompt, content)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            versions(),
        )
        deployments, history = [], []
        for p in range(prompts):
            base = p * per_prompt
            prod, staged = base + per_prompt, base + max(per_prompt - 1, 1)
            for env, vid in (("production", prod), ("staging", staged)):
                deployments.append((p + 1, env, vid, stamp(START), "U01", per_prompt))
            for v in range(per_prompt):
                for env in ("staging", "production"):
                    history.append(
                        (
                            p + 1,
                            env,
                            base + v + 1,
                            base + v if v else None,
                            "promote",
                            "U01",
                            stamp(START + timedelta(minutes=v)),
                        )
                    )
        conn.executemany(
            "INSERT INTO deployments (prompt_id, environment, version_id, deployed_at,"
            " deployed_by, revision) VALUES (?, ?, ?, ?, ?, ?)",
            deployments,
        )
        conn.executemany(
            "INSERT INTO deployment_history (prompt_id, environment, version_id,"
            " previous_version_id, move, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            history,
        )

        fill_audit(conn, events, names, per_prompt, rng, key=None)
    conn.execute("ANALYZE")
    conn.close()


def fill_audit(
    conn: sqlite3.Connection,
    events: int,
    names: list[str],
    per_prompt: int,
    rng: random.Random,
    key: AuditKey | None,
) -> None:
    """Append ``events`` audit events in one valid chain: HMAC-SHA256 under ``key``, or the
    plain SHA-256 of events written before keyed audit (``key`` None)."""
    prev = GENESIS

    def audit_rows() -> object:
        nonlocal prev
        for seq in range(1, events + 1):
            at = START + timedelta(seconds=seq)
            p = rng.randrange(len(names))
            action = ACTIONS[seq % len(ACTIONS)]
            environment = None if action == "version.registered" else "production"
            version = f"1.{seq % per_prompt}.0"
            details = {"n": seq}
            # a request's events name it (ids far past any request a benchmark then opens)
            request_id = (
                REQUEST_IDS + seq // len(ACTIONS) if action.startswith("request.") else None
            )
            digest = event_hash(
                seq=seq,
                at=at,
                actor="U01",
                action=action,
                prompt=names[p],
                version=version,
                environment=environment,
                request_id=request_id,
                details=details,
                prev_hash=prev,
                key=key,
            )
            yield (
                seq,
                stamp(at),
                "U01",
                action,
                names[p],
                version,
                environment,
                request_id,
                json.dumps(details),
                prev,
                digest,
                key.id if key else None,
            )
            prev = digest

    conn.executemany(
        "INSERT INTO audit_events (seq, at, actor, action, prompt, version, environment,"
        " request_id, details, prev_hash, hash, key_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        audit_rows(),
    )
    conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (events, prev))


async def verify_rates(events: int, workdir: Path) -> tuple[float, float]:
    """Events verified per second by ``audit verify`` over a chain of ``events`` events:
    (plain SHA-256, keyed HMAC-SHA256), each on a store holding only that chain."""
    rates = []
    for key in (None, parse_keys(BENCH_KEY).signer):
        path = workdir / f"chain-{'hmac' if key else 'sha256'}.db"
        await migrate(path)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA synchronous=OFF")
        with conn:
            fill_audit(conn, events, ["prompt-0"], 10, random.Random(1), key)
        conn.close()
        db = Database(f"sqlite+aiosqlite:///{path}", audit_keys=BENCH_KEY)
        started = time.perf_counter()
        verification = await Promptship(db, Policy()).verify_audit()
        took = time.perf_counter() - started
        await db.dispose()
        assert verification.ok and verification.checked == events, verification.problems
        rates.append(events / took)
    return rates[0], rates[1]


async def timed(
    call: Callable[[str], Awaitable[object]], names: list[str], queries: int
) -> list[float]:
    for name in names[:20]:  # warm the pool and the page cache
        await call(name)
    rng = random.Random(7)
    samples = []
    for _ in range(queries):
        name = rng.choice(names)
        start = time.perf_counter()
        await call(name)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def measure(path: Path, names: list[str], queries: int) -> dict[str, list[float]]:
    db = Database(f"sqlite+aiosqlite:///{path}")
    core = Promptship(db, Policy())
    try:
        return {
            "status": await timed(lambda n: core.status(n), names, queries),
            "history": await timed(lambda n: core.history(n), names, queries),
        }
    finally:
        await db.dispose()


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"median {statistics.median(samples):7.2f} ms   p95 {p95:7.2f} ms"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--versions-per-prompt", type=int, default=10)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--verify", action="store_true", help="also time audit verify")
    parser.add_argument("--keep", type=Path, help="build (or reuse) the big store at this path")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="promptship-bench-"))
    big = args.keep or workdir / "big.db"
    empty = workdir / "empty.db"
    if not big.exists():
        started = time.perf_counter()
        await migrate(big)
        fill(big, args.prompts, args.versions_per_prompt, args.events)
        print(
            f"built {big}: {args.prompts:,} prompts, "
            f"{args.prompts * args.versions_per_prompt:,} versions, {args.events:,} audit events "
            f"in {time.perf_counter() - started:.0f} s ({big.stat().st_size / 2**20:.0f} MiB)"
        )
    await migrate(empty)
    fill(empty, 1, args.versions_per_prompt, 100)

    names = [f"prompt-{i:05d}" for i in range(args.prompts)]
    on_big = await measure(big, names, args.queries)
    on_empty = await measure(empty, ["prompt-00000"], args.queries)

    failed = False
    print(f"\n{args.queries} queries each, random prompts; target median < {TARGET_MS:.0f} ms")
    for query in ("status", "history"):
        median_big = statistics.median(on_big[query])
        ratio = median_big / statistics.median(on_empty[query])
        verdict = "PASS" if median_big < TARGET_MS else "FAIL"
        failed |= verdict == "FAIL"
        print(f"  {query:8} big store:   {summary(on_big[query])}")
        print(f"  {query:8} empty store: {summary(on_empty[query])}")
        print(f"  {query:8} ratio big/empty {ratio:.2f}  {verdict}")

    if args.verify:
        sha256, keyed = await verify_rates(args.events, workdir)
        print(
            f"\naudit verify, {args.events:,} events: SHA-256 chain {sha256:,.0f} events/s, "
            f"keyed HMAC-SHA256 chain {keyed:,.0f} events/s (keyed/plain {keyed / sha256:.2f})"
        )
        db = Database(f"sqlite+aiosqlite:///{big}", audit_keys=BENCH_KEY)
        started = time.perf_counter()
        verification = await Promptship(db, Policy()).verify_audit()
        took = time.perf_counter() - started
        await db.dispose()
        print(
            f"\naudit verify: {verification.checked:,} events in {took:.1f} s "
            f"({verification.checked / took:,.0f} events/s), ok={verification.ok}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
