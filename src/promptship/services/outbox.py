"""The notification outbox: rows written in the same transaction as the change they tell of.

A dispatcher (the Slack layer) delivers them after commit, so a notification is never sent
for a change that rolled back, and never lost for one that committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.clock import Clock
from promptship.domain.identity import Actor
from promptship.errors import BadInput, NotFound
from promptship.services import audit
from promptship.store.models import (
    NotificationThread,
    OutboxChannelLease,
    OutboxDeadLetter,
    OutboxMessage,
)

#: the topic of the alert a dead letter posts to its channel; an alert is never alerted on
UNDELIVERED_TOPIC = "outbox.undelivered"


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


async def renew_channel(
    session: AsyncSession, clock: Clock, channel: str, worker: str, lease: timedelta
) -> bool:
    """Extend a lease ``worker`` still holds; False once another worker has taken (or it has
    released) the channel, so what it fetched before may already have been sent."""
    renewed = await session.execute(
        update(OutboxChannelLease)
        .where(OutboxChannelLease.channel == channel, OutboxChannelLease.leased_by == worker)
        .values(lease_until=clock.now() + lease)
    )
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]


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
    replaces_parent: bool = False,
) -> None:
    """Record delivery; a message that starts a thread becomes the thread's parent, and one
    posted because the parent was deleted takes the old parent's place."""
    now = clock.now()
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == delivery.id)
        .values(state="sent", sent_at=now, attempts=OutboxMessage.attempts + 1, last_error=None)
    )
    if (starts_thread or replaces_parent) and delivery.thread_key and message_id:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        values = insert(NotificationThread).values(
            thread_key=delivery.thread_key,
            channel=delivery.channel,
            message_id=message_id,
            created_at=now,
        )
        await session.execute(
            values.on_conflict_do_update(
                index_elements=["thread_key"], set_={"message_id": message_id}
            )
            if replaces_parent
            else values.on_conflict_do_nothing(index_elements=["thread_key"])
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


async def mark_dead(session: AsyncSession, clock: Clock, delivery: Delivery, error: str) -> bool:
    """Set a notification aside so the channel's later ones go out, and tell the channel.

    Returns False if the row was no longer pending (another worker got to it first)."""
    error = error[:2000]
    attempts = delivery.attempts + 1
    dead = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == delivery.id, OutboxMessage.state == "pending")
        .values(state="dead", attempts=attempts, last_error=error)
    )
    if dead.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(
        OutboxDeadLetter(
            outbox_id=delivery.id,
            topic=delivery.topic,
            channel=delivery.channel,
            attempts=attempts,
            error=error,
            dead_at=clock.now(),
        )
    )
    if delivery.topic != UNDELIVERED_TOPIC:  # an alert about an alert would never end
        await enqueue(
            session,
            clock,
            UNDELIVERED_TOPIC,
            {"outbox_id": delivery.id, "topic": delivery.topic, "error": error[:300]},
            channel=delivery.channel,
        )
    await session.flush()
    return True


@dataclass(frozen=True)
class DeadLetter:
    """A notification set aside: its outbox id, what it was, and why it failed."""

    id: int
    topic: str
    channel: str | None
    attempts: int
    error: str
    dead_at: str


async def dead_letters(session: AsyncSession, limit: int = 500) -> list[DeadLetter]:
    rows = (
        await session.execute(
            select(OutboxDeadLetter).order_by(OutboxDeadLetter.outbox_id).limit(limit)
        )
    ).scalars()
    return [
        DeadLetter(
            id=r.outbox_id,
            topic=r.topic,
            channel=r.channel,
            attempts=r.attempts,
            error=r.error,
            dead_at=r.dead_at.isoformat(),
        )
        for r in rows
    ]


async def dead_letter_count(session: AsyncSession) -> int:
    return int(
        (await session.execute(select(func.count()).select_from(OutboxDeadLetter))).scalar_one()
    )


async def _take_dead(session: AsyncSession, ids: list[int] | None) -> list[DeadLetter]:
    query = select(OutboxDeadLetter).order_by(OutboxDeadLetter.outbox_id).with_for_update()
    if ids is not None:
        query = query.where(OutboxDeadLetter.outbox_id.in_(ids))
    rows = list((await session.execute(query)).scalars())
    missing = sorted(set(ids or ()) - {r.outbox_id for r in rows})
    if missing:
        raise NotFound(
            f"no dead letter with id {', '.join(map(str, missing))}",
            hint="promptship outbox list shows them",
        )
    if rows:
        await session.execute(
            delete(OutboxDeadLetter).where(
                OutboxDeadLetter.outbox_id.in_([r.outbox_id for r in rows])
            )
        )
    return [
        DeadLetter(r.outbox_id, r.topic, r.channel, r.attempts, r.error, r.dead_at.isoformat())
        for r in rows
    ]


async def retry_dead(
    session: AsyncSession, clock: Clock, ids: list[int] | None, actor: Actor
) -> list[DeadLetter]:
    """Put dead letters (``ids``, or all with None) back in their channel's line, with a
    fresh count of tries; they go out before anything queued after them."""
    if ids is not None and not ids:
        raise BadInput("which dead letter?", hint="promptship outbox retry ID or --all")
    letters = await _take_dead(session, ids)
    if letters:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([d.id for d in letters]), OutboxMessage.state == "dead")
            .values(state="pending", attempts=0, available_at=clock.now(), last_error=None)
        )
        await audit.record(
            session,
            clock,
            actor=actor.id,
            action="outbox.retried",
            details={**actor.audit_details(), "ids": [d.id for d in letters]},
        )
    return letters


async def drop_dead(session: AsyncSession, clock: Clock, id: int, actor: Actor) -> DeadLetter:
    """Discard a dead letter for good; the audit log keeps what it was."""
    (letter,) = await _take_dead(session, [id])
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == id).values(state="dropped")
    )
    await audit.record(
        session,
        clock,
        actor=actor.id,
        action="outbox.dropped",
        details={
            **actor.audit_details(),
            "id": letter.id,
            "topic": letter.topic,
            "channel": letter.channel,
            "attempts": letter.attempts,
            "error": letter.error,
        },
    )
    return letter
