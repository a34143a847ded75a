"""Command receipts: a signed slash command that changes something is acted on once.

Slack accepts a signed request for five minutes after its timestamp, so a captured request
(a rollback, an approval typed as a command) can be sent again within that window. Each
such command claims a receipt keyed by the fingerprint of its signed request before it
runs; a replay finds the receipt and is told so instead. The claim is one conditional
INSERT, so it holds across replicas sharing the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.clock import Clock
from promptship.services import registry
from promptship.store.models import CommandReceipt

#: Slack's signature window: a replay older than this fails verification anyway.
RECEIPT_TTL = timedelta(minutes=5)
#: added to it, for replicas whose clocks disagree by up to this much
CLOCK_MARGIN = timedelta(seconds=60)
#: expired receipts removed per claim, so pruning never makes a command slow
PRUNE_BATCH = 100


@dataclass(frozen=True)
class Receipt:
    """Whether this request is the first of its fingerprint, and when that one arrived."""

    first: bool
    received_at: datetime


def fingerprint(signed_at: str, raw_body: str) -> str:
    """SHA-256 over what the signature covers: the timestamp header and the raw body (which
    carries Slack's ``trigger_id``); a replayer cannot change either and keep the signature."""
    return hashlib.sha256(f"{signed_at}\n{raw_body}".encode()).hexdigest()


def expiry(signed_at: str, now: datetime) -> datetime:
    """When a receipt may go: Slack's window after its signed timestamp (``signed_at``, Unix
    seconds) plus :data:`CLOCK_MARGIN`, so a replica whose clock runs behind cannot expire it
    while another replica still accepts the signature; never before that long after ``now``."""
    try:
        signed = datetime.fromtimestamp(int(signed_at), tz=UTC)
    except (ValueError, OverflowError, OSError):
        signed = now
    return max(signed, now) + RECEIPT_TTL + CLOCK_MARGIN


async def claim(
    session: AsyncSession, clock: Clock, key: str, user_id: str, signed_at: str
) -> Receipt:
    """Claim the receipt for ``key`` (of a request Slack signed at ``signed_at``); ``first``
    is False when it was already claimed."""
    now = clock.now()
    await _prune(session, now, key)
    expires_at = expiry(signed_at, now)
    claimed = (
        await session.execute(
            registry.dialect_insert(session)(CommandReceipt)
            .values(fingerprint=key, user_id=user_id, received_at=now, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["fingerprint"])
            .returning(CommandReceipt.fingerprint)
        )
    ).scalar_one_or_none()
    if claimed is not None:
        return Receipt(first=True, received_at=now)
    received_at = (
        await session.execute(
            select(CommandReceipt.received_at).where(CommandReceipt.fingerprint == key)
        )
    ).scalar_one_or_none()
    return Receipt(first=False, received_at=received_at or now)


async def _prune(session: AsyncSession, now: datetime, key: str) -> None:
    """Drop expired receipts: this key's (so an old one never blocks it) and a batch of others."""
    await session.execute(
        delete(CommandReceipt).where(
            CommandReceipt.fingerprint == key, CommandReceipt.expires_at <= now
        )
    )
    expired = (
        select(CommandReceipt.fingerprint)
        .where(CommandReceipt.expires_at <= now)
        .order_by(CommandReceipt.expires_at)
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)  # another replica pruning the same rows: skip them
        .scalar_subquery()
    )
    await session.execute(delete(CommandReceipt).where(CommandReceipt.fingerprint.in_(expired)))
