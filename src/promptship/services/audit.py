"""The audit log: append-only, every event chained to the one before it with an HMAC.

Appending locks the single ``audit_head`` row, so the chain stays linear across processes
and replicas. Each event's hash is an HMAC-SHA256 under the signing key of
``PROMPTSHIP_AUDIT_KEY`` (the key's id is stored with it; the secret never is), so someone
who can write to the database but lacks the key cannot edit an event and recompute the
chain after it. Events older than keyed audit (``key_id`` NULL) verify as plain SHA-256;
once a keyed event appears, an unkeyed one after it is tampering. Deleting the newest
events and moving ``audit_head`` back is caught by signed checkpoints kept outside the
database (``promptship.services.checkpoints``). ``promptship.services.verification``
checks all of it, and that approvals, deployments and closed requests match their events.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import AuditKey, AuditKeys, Keyring
from promptship.clock import Clock
from promptship.services.chainscan import GENESIS as GENESIS
from promptship.services.chainscan import MAX_PROBLEMS as MAX_PROBLEMS
from promptship.services.chainscan import canonical as _canonical
from promptship.store.db import AUDIT_KEYRING
from promptship.store.models import AuditEvent, AuditHead

if TYPE_CHECKING:
    from promptship.services.checkpoints import Checkpoint

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
    key: AuditKey | None = None,
) -> str:
    """The event's chain hash: HMAC-SHA256 under ``key``, or plain SHA-256 (pre-0007)."""
    canonical = _canonical(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        prompt=prompt,
        version=version,
        environment=environment,
        request_id=request_id,
        details=details,
        prev_hash=prev_hash,
        key_id=key.id if key else None,
    )
    return key.mac(canonical) if key else hashlib.sha256(canonical).hexdigest()


def stored_hash(event: AuditEvent, key: AuditKey | None) -> str:
    """Recompute a stored event's hash with ``key`` (None for an unkeyed event)."""
    return event_hash(
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
        key=key,
    )


def keyring(session: AsyncSession) -> Keyring:
    """The keys of the session's database (``Database`` puts them in ``session.info``)."""
    found = session.info.get(AUDIT_KEYRING)
    if not isinstance(found, Keyring):  # pragma: no cover - every Database session has one
        raise RuntimeError("this session has no audit keyring; open it through Database")
    return found


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
    """Append one event in the caller's transaction, signed with the current key (no key
    configured: refused with MissingAuditKey, and the transaction rolls back)."""
    key = keyring(session).signer()
    head = (
        await session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    ).scalar_one()
    # JSON round trip so the hash covers exactly what the database will give back.
    details = json.loads(json.dumps(details or {}, default=str))
    at = clock.now()
    seq = head.seq + 1
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
        key_id=key.id,
    )
    event.hash = stored_hash(event, key)
    session.add(event)
    head.seq, head.hash = seq, event.hash
    await session.flush()
    return event


def authentic(event: AuditEvent, keys: AuditKeys | None) -> bool:
    """Whether one event's own MAC holds under a listed key (its content is what was
    signed). An unsigned event never counts: anyone who can write to the database could
    have written it."""
    if event.key_id is None:
        return False
    key = keys.get(event.key_id) if keys else None
    return key is not None and hmac.compare_digest(stored_hash(event, key), event.hash)


async def signed_events(
    session: AsyncSession, request_id: int, actions: Collection[str]
) -> list[AuditEvent]:
    """The events of one request with these actions whose MAC holds, oldest first."""
    events = (
        (
            await session.execute(
                select(AuditEvent)
                .where(AuditEvent.request_id == request_id, AuditEvent.action.in_(actions))
                .order_by(AuditEvent.seq)
            )
        )
        .scalars()
        .all()
    )
    keys = keyring(session).keys()
    return [e for e in events if authentic(e, keys)]


async def signed_version_events(
    session: AsyncSession,
    prompt: str,
    version: str,
    actions: Collection[str],
    *,
    environment: str | None = None,
    newest_first: bool = False,
) -> list[AuditEvent]:
    """The events of one prompt version (in ``environment``, when given) with these
    actions whose MAC holds, oldest first (or newest first)."""
    query = select(AuditEvent).where(
        AuditEvent.prompt == prompt, AuditEvent.version == version, AuditEvent.action.in_(actions)
    )
    if environment is not None:
        query = query.where(AuditEvent.environment == environment)
    order = AuditEvent.seq.desc() if newest_first else AuditEvent.seq
    events = (await session.execute(query.order_by(order))).scalars().all()
    keys = keyring(session).keys()
    return [e for e in events if authentic(e, keys)]


#: what a validation run's signed record is: its result, and regressions accepted later
RUN_FINISHED, RUN_OVERRIDDEN = "validation.finished", "validation.regressions_overridden"


async def signed_run_events(
    session: AsyncSession, prompt: str, version: str, run_id: int
) -> list[AuditEvent]:
    """The signed events of one validation run: its result and any later override of its
    regressions, oldest first."""
    events = await signed_version_events(session, prompt, version, (RUN_FINISHED, RUN_OVERRIDDEN))
    return [e for e in events if e.details.get("run") == run_id]


DECISION_ACTIONS = {True: "request.approved", False: "request.rejection"}


async def signed_creation(session: AsyncSession, request_id: int) -> AuditEvent | None:
    """The request's signed ``request.created`` event (None when it has none)."""
    events = await signed_events(session, request_id, ("request.created",))
    return events[0] if events else None


@dataclass
class Verification:
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    #: events hashed with plain SHA-256, from before keyed audit (only checkpoints vouch
    #: for these: anyone who can write to the database could have rewritten them)
    unkeyed: int = 0
    #: checkpoints compared with the chain (stored ones and those given), and the newest
    checkpoints: int = 0
    newest_checkpoint: int | None = None
    #: the events checked: ``start`` to ``end`` (1 for the whole chain; past the end of an
    #: empty range, ``end`` is ``start - 1``), and whether that was the whole chain and the
    #: tables' cross-checks with it
    start: int = 1
    end: int = 0
    whole: bool = True
    #: the genuine checkpoint a range verification started from (it vouches for the
    #: events before it)
    resumed_from: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> bool:
        """Note a problem; False once there are too many to be worth reading."""
        if len(self.problems) >= MAX_PROBLEMS:
            return False
        self.problems.append(problem)
        if len(self.problems) == MAX_PROBLEMS:
            self.problems.append(f"… stopped after {MAX_PROBLEMS} problems")
            return False
        return True


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
    "key_id",
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
        "key_id": event.key_id,
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


def _on_behalf(event: AuditEvent, role: str) -> tuple[str, str | None]:
    """The person an event names in ``role`` (its actor when it names none) and the proxy
    who acted on their behalf, if one did."""
    proxy = event.details.get("on_behalf_of_by")
    return str(event.details.get(role, event.actor)), str(proxy) if proxy else None


def registered_authorship(event: AuditEvent) -> tuple[str, str | None]:
    """The author and the proxy (who pushed on the author's behalf) a ``version.registered``
    event records."""
    return _on_behalf(event, "author")


def created_requester(event: AuditEvent) -> tuple[str, str | None]:
    """The requester and the proxy (who asked on the requester's behalf) a
    ``request.created`` event records."""
    return _on_behalf(event, "requester")
