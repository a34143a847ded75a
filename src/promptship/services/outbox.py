"""The notification outbox: rows written in the same transaction as the change they tell of.

A dispatcher (the Slack layer) delivers them after commit, so a notification is never sent
for a change that rolled back, and never lost for one that committed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from promptship.clock import Clock
from promptship.store.models import OutboxMessage


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
