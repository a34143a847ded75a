"""The notification outbox: rows written in the same transaction as the change they tell of.

A dispatcher (the Slack layer) delivers them after commit, so a notification is never sent
for a change that rolled back, and never lost for one that committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.clock import Clock
from promptship.store.models import NotificationThread, OutboxChannelLease, OutboxMessage


async def enqueue(
    session: AsyncSession,
    clock: Clock,
    topic: str,
    payload: dict[str, Any],
    *,
    channel: str | None,
    thread_key: str | None = None,
    dedupe_key: str | None = None,
) -> OutboxMessage:
    now = clock.now()
    message = OutboxMessage(
        created_at=now,
        topic=topic,
        channel=channel,
        thread_key=thread_key,
        payload=payload,
        dedupe_key=dedupe_key,
        state="pending",
        attempts=0,
        available_at=now,
    )
    session.add(message)
    await session.flush()
    return message


@dataclass(frozen=True)
class Delivery:
    """A notification due for delivery, with the message its thread hangs under (if any)."""

    id: int
    topic: str
    channel: str
    thread_key: str | None
    payload: dict[str, Any]
    attempts: int
    thread_message_id: str | None


async def pending_channels(session: AsyncSession, clock: Clock, limit: int = 50) -> list[str]:
    rows = await session.execute(
        select(OutboxMessage.channel)
        .where(
            OutboxMessage.state == "pending",
            OutboxMessage.channel.is_not(None),
            OutboxMessage.available_at <= clock.now(),
        )
        .group_by(OutboxMessage.channel)
        .order_by(func.min(OutboxMessage.id))
        .limit(limit)
    )
    return [c for c in rows.scalars().all() if c]


async def lease_channel(
    session: AsyncSession, clock: Clock, channel: str, worker: str, lease: timedelta
) -> bool:
    """Become the only sender of ``channel`` until the lease ends (compare-and-set)."""
    now = clock.now()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(OutboxChannelLease)
        .values(channel=channel, leased_by=None, lease_until=None)
        .on_conflict_do_nothing(index_elements=["channel"])
    )
    taken = await session.execute(
        update(OutboxChannelLease)
        .where(
            OutboxChannelLease.channel == channel,
            or_(
                OutboxChannelLease.leased_by.is_(None),
                OutboxChannelLease.leased_by == worker,
                OutboxChannelLease.lease_until < now,
            ),
        )
        .values(leased_by=worker, lease_until=now + lease)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


async def release_channel(session: AsyncSession, channel: str, worker: str) -> None:
    await session.execute(
        update(OutboxChannelLease)
        .where(OutboxChannelLease.channel == channel, OutboxChannelLease.leased_by == worker)
        .values(leased_by=None, lease_until=None)
    )


async def due(session: AsyncSession, clock: Clock, channel: str, limit: int = 20) -> list[Delivery]:
    """The channel's pending messages in order, up to the first that must still wait."""
    rows = (
        (
            await session.execute(
                select(OutboxMessage)
                .where(OutboxMessage.channel == channel, OutboxMessage.state == "pending")
                .order_by(OutboxMessage.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    now = clock.now()
    result = []
    for row in rows:
        if row.available_at > now:
            break  # a later message never overtakes one waiting to be retried
        thread = None
        if row.thread_key:
            thread = (
                await session.execute(
                    select(NotificationThread.message_id).where(
                        NotificationThread.thread_key == row.thread_key
                    )
                )
            ).scalar_one_or_none()
        result.append(
            Delivery(
                id=row.id,
                topic=row.topic,
                channel=channel,
                thread_key=row.thread_key,
                payload=row.payload,
                attempts=row.attempts,
                thread_message_id=thread,
            )
        )
    return result


async def mark_sent(
    session: AsyncSession,
    clock: Clock,
    delivery: Delivery,
    message_id: str | None,
    starts_thread: bool,
) -> None:
    """Record delivery; a message that starts a thread becomes the thread's parent."""
    now = clock.now()
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == delivery.id)
        .values(state="sent", sent_at=now, attempts=OutboxMessage.attempts + 1, last_error=None)
    )
    if starts_thread and delivery.thread_key and message_id:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(NotificationThread)
            .values(
                thread_key=delivery.thread_key,
                channel=delivery.channel,
                message_id=message_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["thread_key"])
        )


async def mark_retry(
    session: AsyncSession, clock: Clock, delivery: Delivery, delay: timedelta, error: str
) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == delivery.id)
        .values(
            attempts=OutboxMessage.attempts + 1,
            available_at=clock.now() + delay,
            last_error=error[:2000],
        )
    )


async def backlog(session: AsyncSession) -> int:
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.state == "pending")
            )
        ).scalar_one()
    )
