"""Store scale: do ``status`` and ``history`` stay fast on a big SQLite database?

Builds a migrated SQLite store with 10,000 prompts, 100,000 versions (each prompt live in
staging and production, with its deployment history) and 1,000,000 audit events in one
valid hash chain, the events of all prompts interleaved as a busy team's would be. Then
times, through the real services, ``status`` for one prompt and ``history`` (the first
page), each on random prompts, and the same queries on an empty database (one prompt,
its versions and events only): the ratio shows what the size costs. Target: each median
under 50 ms on the big store. Optionally (``--verify``) times ``audit verify``:
``verify_rates`` compares the keyed (HMAC-SHA256) chain with the old plain SHA-256 one over
the same number of events; on the keyed chain, the fast scan against the old ORM walk
(``chainref``, the baseline, in the same run), and ``--since-checkpoint`` from a checkpoint
1,000 events before the head; then the same on the big store, and with ``--postgres URL``
on PostgreSQL (in a database of its own, ``bench_verify_<pid>``, made and dropped in that
server). Targets: the whole chain at 200,000 events/s or more (the median of three runs),
a range from the newest checkpoint under 100 ms.

    .venv/bin/python benchmarks/store.py [--prompts 10000] [--versions-per-prompt 10]
        [--events 1000000] [--queries 300] [--verify] [--postgres URL] [--keep PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptship.auditkeys import AuditKey, parse_keys
from promptship.config import Policy
from promptship.services import Promptship, audit_checks, chainref
from promptship.services.audit import GENESIS, event_hash
from promptship.services.checkpoints import checkpoint_mac
from promptship.store.db import Database

BENCH_KEY = "bench:" + "b" * 44

TARGET_MS = 50.0
START = datetime(2026, 1, 1, tzinfo=UTC)
ACTIONS = ("version.registered", "request.created", "request.approved", "deployment.changed")
#: the first request id the filled events name
REQUEST_IDS = 10_000_000
#: the events of a store holding only a chain: none the cross-checks look for in tables
CHAIN_ACTIONS = ("version.registered", "deployment.changed")
AUDIT_COLUMNS = (
    "seq at actor action prompt version environment request_id details prev_hash hash key_id"
).split()
#: audit verify's targets: the whole chain, and a range from the newest checkpoint, which
#: is ``RANGE_EVENTS`` events behind the head
TARGET_RATE = 200_000
TARGET_RANGE_MS = 100.0
RANGE_EVENTS = 1000
#: whole-chain verifies timed per store (the median counts): one run alone is at the mercy
#: of whatever else the machine does for those few seconds
FAST_RUNS = 3


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


def audit_rows(
    events: int,
    names: list[str],
    per_prompt: int,
    rng: random.Random,
    key: AuditKey | None,
    actions: tuple[str, ...] = ACTIONS,
) -> Iterator[tuple[Any, ...]]:
    """``events`` audit events in one valid chain, with the values the services write (an
    aware time, details as a dict): HMAC-SHA256 under ``key``, or the plain SHA-256 of
    events written before keyed audit (``key`` None)."""
    prev = GENESIS
    for seq in range(1, events + 1):
        at = START + timedelta(seconds=seq)
        p = rng.randrange(len(names))
        action = actions[seq % len(actions)]
        environment = None if action == "version.registered" else "production"
        version = f"1.{seq % per_prompt}.0"
        details = {"n": seq}
        # a request's events name it (ids far past any request a benchmark then opens)
        request_id = REQUEST_IDS + seq // len(actions) if action.startswith("request.") else None
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
            at,
            "U01",
            action,
            names[p],
            version,
            environment,
            request_id,
            details,
            prev,
            digest,
            key.id if key else None,
        )
        prev = digest


def fill_audit(
    conn: sqlite3.Connection,
    events: int,
    names: list[str],
    per_prompt: int,
    rng: random.Random,
    key: AuditKey | None,
    actions: tuple[str, ...] = ACTIONS,
) -> None:
    """Append ``events`` audit events in one valid chain (``audit_rows``) to a SQLite store,
    stored as SQLAlchemy stores them."""
    conn.executemany(
        "INSERT INTO audit_events (seq, at, actor, action, prompt, version, environment,"
        " request_id, details, prev_hash, hash, key_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (*row[:1], stamp(row[1]), *row[2:8], json.dumps(row[8]), *row[9:])
            for row in audit_rows(events, names, per_prompt, rng, key, actions)
        ),
    )
    conn.execute(
        "UPDATE audit_head SET seq = ?, hash = (SELECT hash FROM audit_events WHERE seq = ?)"
        " WHERE id = 1",
        (events, events),
    )


def bench_checkpoint(seq: int, digest: str) -> tuple[Any, ...]:
    """A genuine checkpoint of event ``seq`` (with hash ``digest``), signed with the
    benchmark's key: (seq, hash, at, key_id, mac, reason)."""
    key = parse_keys(BENCH_KEY).signer
    at = START + timedelta(seconds=seq)
    return (seq, digest, at, key.id, checkpoint_mac(key, seq, digest, at), "benchmark")


def add_checkpoint(path: Path, behind: int = RANGE_EVENTS) -> None:
    """A checkpoint ``behind`` events before the head of a SQLite store, unless it has one."""
    conn = sqlite3.connect(path)
    with conn:
        if conn.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0] == 0:
            head = conn.execute("SELECT seq FROM audit_head").fetchone()[0]
            seq = max(head - behind, 1)
            digest = conn.execute("SELECT hash FROM audit_events WHERE seq = ?", (seq,))
            row = bench_checkpoint(seq, digest.fetchone()[0])
            conn.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at, key_id, mac, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row[0], row[1], stamp(row[2]), *row[3:]),
            )
    conn.close()


async def build_chain(path: Path, events: int, key: AuditKey | None) -> None:
    """A SQLite store holding only a chain of ``events`` events (whose actions need no
    rows in other tables: the cross-checks find nothing) and a checkpoint near its head."""
    await migrate(path)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        fill_audit(conn, events, ["prompt-0"], 10, random.Random(1), key, CHAIN_ACTIONS)
    conn.close()
    add_checkpoint(path)
    os.sync()  # the build's writes go to disk now, not while a verify is being timed


async def verify_rate(db: Database, events: int, reference: bool = False) -> float:
    """Events per second of a whole-chain ``audit verify`` (the fast scan: the median of
    ``FAST_RUNS``; or the old ORM walk, the baseline, once: it takes a minute) on a store
    whose chain is intact."""
    samples = []
    for _ in range(1 if reference else FAST_RUNS):
        started = time.perf_counter()
        if reference:
            async with db.reader() as session:
                found = await chainref.verify(session)
        else:
            found = await Promptship(db, Policy()).verify_audit()
        samples.append(time.perf_counter() - started)
        assert found.ok and found.checked == events, found.problems
    return events / statistics.median(samples)


async def range_ms(db: Database, runs: int = 5) -> tuple[float, int, int]:
    """The median time of ``audit verify --since-checkpoint``: (ms, events, from seq)."""
    core = Promptship(db, Policy())
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        found = await core.verify_audit(since_checkpoint=True)
        samples.append((time.perf_counter() - started) * 1000)
        assert found.ok and found.resumed_from is not None, found.problems
    return statistics.median(samples), found.checked, found.start


async def verify_rates(events: int, workdir: Path) -> tuple[float, float]:
    """Events verified per second by ``audit verify`` over a chain of ``events`` events:
    (plain SHA-256, keyed HMAC-SHA256), each on a store holding only that chain."""
    rates = []
    for key in (None, parse_keys(BENCH_KEY).signer):
        path = workdir / f"chain-{'hmac' if key else 'sha256'}.db"
        await build_chain(path, events, key)
        db = Database(f"sqlite+aiosqlite:///{path}", audit_keys=BENCH_KEY)
        rates.append(await verify_rate(db, events))
        await db.dispose()
    return rates[0], rates[1]


def verdicts(store: str, events: int, fast: float, baseline: float, ms: float) -> bool:
    """Print the fast scan against the baseline and the targets; True if both pass."""
    rate_ok, range_ok = fast >= TARGET_RATE, ms < TARGET_RANGE_MS
    print(
        f"  {store}: {fast:,.0f} events/s ({events / fast:.1f} s), old ORM walk (baseline) "
        f"{baseline:,.0f} events/s: {fast / baseline:.1f}x; target >= {TARGET_RATE:,} "
        f"events/s: {'PASS' if rate_ok else 'FAIL'}"
    )
    print(
        f"  {store}: --since-checkpoint {ms:.1f} ms; target < {TARGET_RANGE_MS:.0f} ms: "
        f"{'PASS' if range_ok else 'FAIL'}"
    )
    return rate_ok and range_ok


async def postgres_rates(admin_url: str, events: int) -> tuple[float, float, float, int]:
    """The keyed chain of ``events`` events in a database of this run's own, made and
    dropped in the server ``admin_url`` names: (fast events/s, baseline events/s,
    --since-checkpoint ms, events it checked)."""
    import asyncpg
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = make_url(admin_url)
    name = f"bench_verify_{os.getpid()}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.set(database=name)
    db = Database(url.render_as_string(hide_password=False), audit_keys=BENCH_KEY)
    try:
        await db.upgrade()
        raw = await asyncpg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        key = parse_keys(BENCH_KEY).signer
        rows = audit_rows(events, ["prompt-0"], 10, random.Random(1), key, CHAIN_ACTIONS)
        await raw.copy_records_to_table(
            "audit_events",
            records=((*row[:8], json.dumps(row[8]), *row[9:]) for row in rows),
            columns=AUDIT_COLUMNS,
        )
        seq = max(events - RANGE_EVENTS, 1)
        await raw.execute(
            "UPDATE audit_head SET seq = $1, hash = (SELECT hash FROM audit_events WHERE seq = $1)",
            events,
        )
        digest = await raw.fetchval("SELECT hash FROM audit_events WHERE seq = $1", seq)
        await raw.execute(
            "INSERT INTO audit_checkpoints (seq, hash, at, key_id, mac, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            *bench_checkpoint(seq, digest),
        )
        await raw.execute("ANALYZE")
        await raw.execute("CHECKPOINT")  # the load's writes reach disk before the timing
        await raw.close()
        fast = await verify_rate(db, events)
        baseline = await verify_rate(db, events, reference=True)
        ms, checked, _ = await range_ms(db)
        return fast, baseline, ms, checked
    finally:
        await db.dispose()
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await engine.dispose()


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
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="with --verify, also on this PostgreSQL server (in a database of its own)",
    )
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
        chain = Database(f"sqlite+aiosqlite:///{workdir / 'chain-hmac.db'}", audit_keys=BENCH_KEY)
        baseline = await verify_rate(chain, args.events, reference=True)
        ms, checked, start = await range_ms(chain)
        await chain.dispose()
        print(
            f"\naudit verify of the keyed chain, {args.events:,} events; --since-checkpoint "
            f"from event {start:,} ({checked:,} events), median of 5:"
        )
        failed |= not verdicts("SQLite", args.events, keyed, baseline, ms)
        if args.postgres:
            fast, baseline, ms, _ = await postgres_rates(args.postgres, args.events)
            failed |= not verdicts("PostgreSQL", args.events, fast, baseline, ms)

        add_checkpoint(big)
        db = Database(f"sqlite+aiosqlite:///{big}", audit_keys=BENCH_KEY)
        started = time.perf_counter()
        verification = await Promptship(db, Policy()).verify_audit()
        took = time.perf_counter() - started
        async with db.reader() as session:  # what the tables' cross-checks cost alone
            started = time.perf_counter()
            await audit_checks.cross_check(session)
            tables = time.perf_counter() - started
        ms, checked, start = await range_ms(db)
        await db.dispose()
        print(
            f"\naudit verify: {verification.checked:,} events in {took:.1f} s "
            f"({verification.checked / took:,.0f} events/s), ok={verification.ok} (the big "
            f"store: the chain, and alongside it the cross-checks of its tables, {tables:.1f} s "
            "alone; its requests have no rows)"
        )
        print(
            f"audit verify --since-checkpoint on the big store: {checked:,} events from event "
            f"{start:,} in {ms:.1f} ms (median of 5)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
