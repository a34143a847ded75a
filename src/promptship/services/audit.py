"""The audit log: append-only, every event hash-chained to the one before it.

Appending locks the single ``audit_head`` row, so the chain stays linear across processes
and replicas; ``verify`` recomputes every hash and finds edited, deleted or inserted rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.clock import Clock
from promptship.store.models import AuditEvent, AuditHead

GENESIS = "0" * 64
SYSTEM_ACTOR = "promptship"


def event_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    prompt: str | None,
    version: str | None,
    environment: str | None,
    request_id: int | None,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "prompt": prompt,
        "version": version,
        "environment": environment,
        "request_id": request_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def record(
    session: AsyncSession,
    clock: Clock,
    *,
    actor: str,
    action: str,
    prompt: str | None = None,
    version: str | None = None,
    environment: str | None = None,
    request_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction."""
    head = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    ).scalar_one()
    # JSON round trip so the hash covers exactly what the database will give back.
    details = json.loads(json.dumps(details or {}, default=str))
    at = clock.now()
    seq = head.seq + 1
    digest = event_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        prompt=prompt,
        version=version,
        environment=environment,
        request_id=request_id,
        details=details,
        prev_hash=head.hash,
    )
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        prompt=prompt,
        version=version,
        environment=environment,
        request_id=request_id,
        details=details,
        prev_hash=head.hash,
        hash=digest,
    )
    session.add(event)
    head.seq, head.hash = seq, digest
    await session.flush()
    return event


@dataclass
class Verification:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify(session: AsyncSession, batch: int = 5000) -> Verification:
    """Recompute the chain; report the first few breaks in plain words."""
    result = Verification()
    expected_seq, prev = 1, GENESIS
    stream = await session.stream_scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    )
    async for event in stream:
        result.checked += 1
        if event.seq != expected_seq:
            result.problems.append(
                f"events {expected_seq}..{event.seq - 1} are missing (deleted?)"
                if event.seq > expected_seq
                else f"event {event.seq} is out of order"
            )
        if event.prev_hash != prev:
            result.problems.append(f"event {event.seq} does not follow the event before it")
        digest = event_hash(
            seq=event.seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            prompt=event.prompt,
            version=event.version,
            environment=event.environment,
            request_id=event.request_id,
            details=event.details,
            prev_hash=event.prev_hash,
        )
        if digest != event.hash:
            result.problems.append(
                f"event {event.seq} was edited: its content no longer matches its hash"
            )
        expected_seq, prev = event.seq + 1, event.hash
        if len(result.problems) >= 20:
            result.problems.append("… stopped after 20 problems")
            return result
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    if head.seq != expected_seq - 1 or head.hash != prev:
        result.problems.append(
            f"the chain ends at event {expected_seq - 1} but the log recorded {head.seq} events "
            "(the newest events were deleted)"
        )
    return result


EXPORT_FIELDS = (
    "seq",
    "at",
    "actor",
    "action",
    "prompt",
    "version",
    "environment",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)


def event_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "prompt": event.prompt,
        "version": event.version,
        "environment": event.environment,
        "request_id": event.request_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


async def export(session: AsyncSession, fmt: str, batch: int = 5000) -> AsyncIterator[str]:
    """Yield the whole log as JSON lines or CSV, oldest first, in chunks of text."""
    stream = await session.stream_scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        async for event in stream:
            row = event_row(event)
            row["details"] = json.dumps(row["details"], sort_keys=True, ensure_ascii=False)
            writer.writerow(row)
            if buffer.tell() > 65536:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    else:
        async for event in stream:
            yield json.dumps(event_row(event), ensure_ascii=False) + "\n"
