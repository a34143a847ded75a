"""Worker processes of ``audit verify``: each scans one range of the audit chain through a
connection of its own (SQLite read-only, or asyncpg) and prints the ``Segment`` it found.

    python -m promptship.services.chainworker < spec.json

The spec, keys included, comes on stdin, never in the arguments or the environment. Only
``chainscan`` and the standard library are imported (asyncpg for PostgreSQL), so a worker
starts in a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptship.services.chainscan import PAGE, Scanner, Segment, hmac_sha256, select_sql

#: how much of a SQLite file a worker maps into memory (pages read in place, not copied)
MMAP_BYTES = 2**30
#: the folder holding this ``promptship`` package, first on a worker's path
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def scanner_for(spec: dict[str, Any]) -> Scanner:
    """The scanner a spec describes (keys as base64 secrets, anchors by seq)."""
    macs = {key_id: hmac_sha256(base64.b64decode(s)) for key_id, s in spec["keys"].items()}
    anchors = {int(seq): [(h, w) for h, w in found] for seq, found in spec["anchors"].items()}
    return Scanner(macs, anchors)


def scan_sqlite(scanner: Scanner, path: str, lo: int, hi: int, page: int = PAGE) -> None:
    """Scan [lo, hi] of a SQLite file through a read-only connection of its own."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        query = select_sql("sqlite", "?", "?", "?")
        while lo <= hi:
            rows = conn.execute(query, (lo, hi, page)).fetchall()
            if not rows:
                break
            scanner.feed(rows)
            lo = rows[-1][0] + 1
    finally:
        conn.close()


async def scan_postgres(
    scanner: Scanner, connect: dict[str, Any], lo: int, hi: int, page: int = PAGE
) -> None:
    """Scan [lo, hi] of a PostgreSQL database through an asyncpg connection of its own;
    the next page is asked for before this one is hashed."""
    import asyncpg

    settings = {**connect.get("server_settings", {}), "timezone": "UTC", "datestyle": "ISO"}
    conn = await asyncpg.connect(**{**connect, "server_settings": settings})
    try:
        query = select_sql("postgresql", "$1", "$2", "$3", time_text=True)
        pending = asyncio.ensure_future(conn.fetch(query, lo, hi, page))
        while True:
            rows = await pending
            if not rows:
                break
            following = rows[-1][0] + 1
            if following > hi:
                scanner.feed(rows)
                break
            pending = asyncio.ensure_future(conn.fetch(query, following, hi, page))
            scanner.feed(rows)
    finally:
        await conn.close()


def run(spec: dict[str, Any]) -> Segment:
    """Scan the range a spec names: ``{"dialect", "path" | "connect", "lo", "hi", "keys",
    "anchors"}``."""
    scanner = scanner_for(spec)
    if spec["dialect"] == "sqlite":
        scan_sqlite(scanner, spec["path"], spec["lo"], spec["hi"])
    else:
        asyncio.run(scan_postgres(scanner, spec["connect"], spec["lo"], spec["hi"]))
    return scanner.segment


async def run_in_workers(specs: Sequence[dict[str, Any]]) -> list[Segment]:
    """Each spec scanned in a process of its own, at once; RuntimeError if one could not
    start or failed. The process imports this very package (not another installed copy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)

    async def one(spec: dict[str, Any]) -> Segment:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "promptship.services.chainworker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise RuntimeError(f"an audit scan worker could not start: {exc}") from exc
        try:
            out, err = await process.communicate(json.dumps(spec).encode())
        finally:
            if process.returncode is None:  # cancelled: the scan is no longer wanted
                process.kill()
                await process.wait()
        if process.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"an audit scan worker failed: {lines[-1] if lines else process.returncode}"
            )
        return Segment.from_json(json.loads(out))

    try:
        async with asyncio.TaskGroup() as group:  # one failing stops the others
            scans = [group.create_task(one(spec)) for spec in specs]
    except* RuntimeError as failed:
        raise failed.exceptions[0] from None
    return [scan.result() for scan in scans]


def main() -> None:
    spec = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(run(spec).as_json()))


if __name__ == "__main__":
    main()
