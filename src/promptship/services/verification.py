"""``verify``: recompute the audit chain (all of it, or from an event or the newest genuine
checkpoint on), compare it with signed checkpoints, and cross-check the tables the gates
read against it. ``verify_tail``: the same checks from the newest stored checkpoint on,
bounded for a page load.

The events are read as plain rows and hashed by ``chainscan``. A long range is split among
worker processes, one per core, each reading its own part of the store; their segments are
joined here, in order, into exactly what one walk over the range finds (the reference walk,
``chainref``, is what the tests hold it to).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import ENV_VAR, AuditKeys
from promptship.errors import BadInput
from promptship.services import audit, audit_checks, chainscan, chainworker
from promptship.services import checkpoints as cps
from promptship.services.chainscan import CONTENT, GAP, LINK, PAGE, Scanner, Segment
from promptship.store.models import AuditEvent, AuditHead

log = logging.getLogger(__name__)

#: the most events ``verify_tail`` reads (past the newest checkpoint) before it says so
MAX_TAIL = 500
#: ranges shorter than this are scanned in this process, through the session
PARALLEL_MIN = 50_000


#: the most worker processes a verification starts
MAX_WORKERS = 8


def _cores() -> int:
    """The cores this process may run on (a container's cpuset, not the host's count)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return min(len(usable) if usable else os.cpu_count() or 1, MAX_WORKERS)


class Join:
    """Segments, in seq order, joined into the findings of one walk over them: each
    segment's first event linked to the previous segment's last, and its unsigned events
    judged by whether a signed one came before."""

    def __init__(
        self,
        result: audit.Verification,
        anchors: dict[int, list[cps.Checkpoint]],
        expected: int,
        prev: str | None,
        keyed: int | None,
    ) -> None:
        self.result, self.anchors = result, anchors
        #: the next seq, the hash it must follow (None: the range's first event is not
        #: linked), and the first signed event's seq as the walk remembers it
        self.expected, self.prev, self.keyed = expected, prev, keyed
        self.anchored: set[int] = set()
        self.reported_keys: set[str] = set()

    def add(self, segment: Segment) -> None:
        if segment.first is None or segment.last is None:
            return
        seq, prev_hash = segment.first
        found: list[tuple[int, int, str, str | None]] = []
        if seq != self.expected:
            found.append((seq, GAP, chainscan.missing(self.expected, seq), None))
        if self.prev is not None and prev_hash != self.prev:
            found.append((seq, LINK, chainscan.unlinked(seq), None))
        found += [(s, kind, message, None) for s, kind, message in segment.problems]
        keyed = self.keyed
        if keyed is not None:
            found += [
                (s, CONTENT, chainscan.unsigned(s, keyed), None) for s in segment.unsigned_first
            ]
        else:
            found += [(s, CONTENT, chainscan.edited(s), None) for s in segment.sha_edited]
        found += [
            (s, CONTENT, chainscan.unsigned(s, keyed or since), None)
            for s, since in segment.unsigned_after
        ]
        found += [
            (
                s,
                CONTENT,
                f"event {s} and others were signed with key {key_id!r}, which {ENV_VAR} does "
                "not list: add it to verify them",
                key_id,
            )
            for key_id, s in segment.missing_keys.items()
        ]
        found.sort(key=lambda f: (f[0], f[1]))
        for _, _, message, key_id in found:
            if key_id is not None:
                if key_id in self.reported_keys:
                    continue
                self.reported_keys.add(key_id)
            self.result.add(message)
        self.result.checked += segment.checked
        self.result.unkeyed += segment.unkeyed
        if not keyed and segment.keyed is not None:
            self.keyed = segment.keyed
        self.expected, self.prev = segment.last[0] + 1, segment.last[1]
        self.anchored.update(segment.anchored)

    def end(self, head: AuditHead) -> None:
        """The checkpoints past the last event, and the log's head, against the chain."""
        last = self.result.end = self.expected - 1
        for seq in sorted(set(self.anchors) - self.anchored):
            self.result.add(
                f"the checkpoint made {self.anchors[seq][0].when} vouches for event {seq}, but "
                f"the chain ends at event {last}: the newest events were deleted"
            )
        if head.seq != last or head.hash != self.prev:
            self.result.add(
                f"the chain ends at event {last} but the log recorded {head.seq} events "
                "(the newest events were deleted)"
            )


@dataclass
class _Range:
    """What to scan: seqs ``lo`` to ``hi`` (the events there), walked as if event
    ``expected`` came next after hash ``prev`` (None: unknown, not linked)."""

    lo: int
    hi: int
    expected: int
    prev: str | None
    #: whether the event before the range was signed (a range starts trusting it)
    keyed_before: bool = False
    anchors: dict[int, list[cps.Checkpoint]] = field(default_factory=dict)


async def _head(session: AsyncSession) -> AuditHead:
    return (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()


async def _plan(
    session: AsyncSession,
    start: int | None,
    anchors: dict[int, list[cps.Checkpoint]],
    asked: bool = True,
) -> _Range:
    """The range from ``start`` (None or 1: the whole chain, whatever seqs it holds) to the
    newest event, and how its first event links to the one before. A start past the end
    is refused when ``asked`` for; it moves back to just past the newest event (from a
    checkpoint whose event was deleted since: the checkpoint then shows the deletion)."""
    # one aggregate a query: SQLite reads min or max alone off the key, both by a full scan
    highest = await session.scalar(select(func.max(AuditEvent.seq)))
    end = 0 if highest is None else highest
    if start is None or start <= 1:
        lowest = await session.scalar(select(func.min(AuditEvent.seq)))
        return _Range(1 if lowest is None else lowest, end, 1, audit.GENESIS, False, anchors)
    if asked:
        last = max((await _head(session)).seq, end)
        if start > last + 1:
            raise BadInput(
                f"the audit log ends at event {last}: nothing to verify from event {start}",
                hint="promptship audit verify checks the whole chain",
            )
    start = min(start, end + 1)
    before = (
        await session.execute(
            select(AuditEvent.hash, AuditEvent.key_id).where(AuditEvent.seq == start - 1)
        )
    ).one_or_none()
    return _Range(
        start,
        end,
        start,
        before.hash if before is not None else None,
        before is not None and before.key_id is not None,
        {seq: found for seq, found in anchors.items() if seq >= start},
    )


def _macs(keys: AuditKeys | None) -> dict[str, chainscan.Mac]:
    return {key.id: chainscan.hmac_sha256(key.secret) for key in keys.keys} if keys else {}


def _anchor_hashes(
    anchors: dict[int, list[cps.Checkpoint]], lo: int, hi: int
) -> dict[int, list[tuple[str, str]]]:
    return {
        seq: [(c.hash, c.when) for c in found] for seq, found in anchors.items() if lo <= seq <= hi
    }


async def _scan_here(
    session: AsyncSession,
    keys: AuditKeys | None,
    span: _Range,
    limit: int | None = None,
) -> Segment:
    """The range scanned in this process through the session, in keyset pages (at most
    ``limit`` events)."""
    dialect = session.get_bind().dialect.name
    scanner = Scanner(_macs(keys), _anchor_hashes(span.anchors, span.lo, span.hi))
    query = text(chainscan.select_sql(dialect, ":lo", ":hi", ":n"))
    lo, left = span.lo, limit if limit is not None else span.hi - span.lo + 1
    while lo <= span.hi and left > 0:
        rows = (await session.execute(query, {"lo": lo, "hi": span.hi, "n": min(PAGE, left)})).all()
        if not rows:
            break
        scanner.feed(rows)
        lo, left = rows[-1][0] + 1, left - len(rows)
    return scanner.segment


def _worker_specs(
    session: AsyncSession, keys: AuditKeys | None, span: _Range, workers: int
) -> list[dict[str, Any]] | None:
    """The range split among ``workers`` processes, each reading the store itself; None
    where they cannot (a SQLite database in memory)."""
    engine = session.get_bind()
    url, dialect = engine.engine.url, engine.dialect.name
    source: dict[str, Any]
    if dialect == "sqlite":
        path = url.database
        if not path or path == ":memory:" or not os.path.isfile(path):
            return None
        source = {"dialect": dialect, "path": os.path.abspath(path)}
    else:
        connect = url.translate_connect_args(username="user", database="database")
        connect.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        source = {"dialect": dialect, "connect": connect}
    secrets = {k.id: base64.b64encode(k.secret).decode() for k in keys.keys} if keys else {}
    width = -(-(span.hi - span.lo + 1) // workers)
    specs = []
    for lo in range(span.lo, span.hi + 1, width):
        hi = min(lo + width - 1, span.hi)
        anchors = _anchor_hashes(span.anchors, lo, hi)
        specs.append(
            {
                **source,
                "lo": lo,
                "hi": hi,
                "keys": secrets,
                "anchors": {str(seq): found for seq, found in anchors.items()},
            }
        )
    return specs


async def _first_keyed(session: AsyncSession) -> int | None:
    """The first signed event's seq as a walk from the start remembers it (``keyed or
    seq``: a signed event 0 is passed over by the next)."""
    keyed: int | None = None
    for seq in await session.scalars(
        select(AuditEvent.seq)
        .where(AuditEvent.key_id.is_not(None))
        .order_by(AuditEvent.seq)
        .limit(2)
    ):
        keyed = keyed or seq
    return keyed


async def _walk(
    session: AsyncSession,
    result: audit.Verification,
    keys: AuditKeys | None,
    span: _Range,
    *,
    workers: int = 1,
    parallel_min: int = PARALLEL_MIN,
    limit: int | None = None,
    alongside: Awaitable[list[str]] | None = None,
) -> list[str]:
    """Scan the range, join what it found into ``result``, check the head; returns what
    ``alongside`` (run while worker processes scan, else after) found."""
    specs = None
    if workers > 1 and span.hi - span.lo + 1 >= parallel_min and limit is None:
        specs = _worker_specs(session, keys, span, workers)
    extra: list[str] = []
    segments: list[Segment] | None = None
    if specs is not None:
        scanning = asyncio.ensure_future(chainworker.run_in_workers(specs))
        try:
            if alongside is not None:
                extra = await alongside
            try:
                segments = await scanning
            except RuntimeError as exc:  # a worker could not start or read: read here
                log.warning("audit verify: %s; scanning in this process instead", exc)
        finally:
            scanning.cancel()
    if segments is None:
        segments = [await _scan_here(session, keys, span, limit)]
        if alongside is not None and specs is None:
            extra = await alongside
    keyed = None
    if span.keyed_before:  # found only when an unsigned event in the range needs it named
        needed = any(s.unsigned_first or s.unsigned_after for s in segments)
        keyed = await _first_keyed(session) if needed else span.expected - 1
    join = Join(result, span.anchors, span.expected, span.prev, keyed)
    for segment in segments:
        join.add(segment)
    join.end(await _head(session))
    return extra


async def verify(
    session: AsyncSession,
    checkpoints: Sequence[cps.Checkpoint] = (),
    *,
    start: int | None = None,
    since_checkpoint: bool = False,
    workers: int | None = None,
    parallel_min: int = PARALLEL_MIN,
) -> audit.Verification:
    """Recompute the chain and compare it with the stored checkpoints and those given (from
    a file or the channel); then cross-check approvals, deployments and closed requests
    against their events. Problems are plain sentences, the first few of each kind.

    From ``start`` on, or from the newest genuine stored checkpoint (``since_checkpoint``;
    it vouches for the events before it, and for itself as it was signed), only that range
    is checked: its events, the checkpoints in it and past its end, and the head. The
    cross-checks read whole tables, so they run with the whole chain only.

    A range of ``parallel_min`` events or more is split among ``workers`` processes (by
    default one per core), the cross-checks running meanwhile."""
    result = audit.Verification()
    keys = audit.keyring(session).keys()
    known = await cps.stored(session)
    anchors = cps.usable(cps.merge(known, checkpoints), keys, result)
    if since_checkpoint:
        genuine = [c for c in known if c in anchors.get(c.seq, ())]
        if genuine:
            result.resumed_from = genuine[-1]
            start = genuine[-1].seq
    span = await _plan(session, start, anchors, asked=result.resumed_from is None)
    result.whole = span.expected == 1
    result.start = span.expected
    problems = await _walk(
        session,
        result,
        keys,
        span,
        workers=_cores() if workers is None else workers,
        parallel_min=parallel_min,
        alongside=audit_checks.cross_check(session) if result.whole else None,
    )
    for problem in problems:
        if not result.add(problem):
            break
    return result


@dataclass
class TailCheck:
    """What ``verify_tail`` found. ``state``: ``verified`` (the newest checkpoint is genuine
    and matches the chain, and every event after it follows and is signed), ``failed`` (see
    ``problems``), or ``unchecked`` (no checkpoint yet, or more than ``MAX_TAIL`` events
    since the newest: ``promptship audit verify`` checks the whole chain)."""

    state: str
    head: int  # events in the log
    checkpoint: cps.Checkpoint | None = None
    checked: int = 0  # events read past the checkpoint (or from the start)
    problems: list[str] = field(default_factory=list)


async def verify_tail(session: AsyncSession, limit: int = MAX_TAIL) -> TailCheck:
    """Check the chain from the newest stored checkpoint to its head (the whole chain when
    it is no longer than ``limit`` and has no checkpoint): the range ``verify`` checks from
    a checkpoint, over at most ``limit`` events."""
    head = await _head(session)
    newest = await cps.stored(session, limit=1)
    checkpoint = newest[-1] if newest else None
    start = checkpoint.seq if checkpoint is not None else 1
    if head.seq - start + 1 > limit:
        return TailCheck("unchecked", head.seq, checkpoint)
    result = audit.Verification()
    keys = audit.keyring(session).keys()
    anchors: dict[int, list[cps.Checkpoint]] = {}
    if checkpoint is not None:
        anchors = cps.usable([checkpoint], keys, result)
        if not anchors:
            return TailCheck("failed", head.seq, checkpoint, 0, result.problems)
        if await session.scalar(select(AuditEvent.seq).where(AuditEvent.seq == start)) is None:
            result.add(
                f"the checkpoint made {checkpoint.when} vouches for event {start}, which is "
                "no longer in the log: events were deleted"
            )
            return TailCheck("failed", head.seq, checkpoint, 0, result.problems)
    await _walk(session, result, keys, await _plan(session, start, anchors), limit=limit)
    state = "verified" if result.ok else "failed"
    return TailCheck(state, head.seq, checkpoint, result.checked, result.problems)
