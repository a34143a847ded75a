"""Notifications wait in the outbox until delivered: one sender per channel, in order,
retried after failures, never lost."""

from __future__ import annotations

from promptship.clock import ManualClock
from promptship.services import Promptship
from tests.helpers import push, to_staging


async def test_one_sender_per_channel_at_a_time(core: Promptship, clock: ManualClock) -> None:
    assert await core.lease_outbox_channel("C1", "replica-a", seconds=30)
    assert not await core.lease_outbox_channel("C1", "replica-b", seconds=30)
    assert await core.lease_outbox_channel("C1", "replica-a", seconds=30)  # renew
    clock.advance(31)  # replica-a died: its lease ran out
    assert await core.lease_outbox_channel("C1", "replica-b", seconds=30)
    await core.release_outbox_channel("C1", "replica-b")
    assert await core.lease_outbox_channel("C1", "replica-a", seconds=30)


async def test_messages_come_in_order_and_a_retry_holds_back_later_ones(
    core: Promptship, clock: ManualClock
) -> None:
    await push(core)
    await to_staging(core)  # request.created, request.promoted, validation.finished …
    assert await core.outbox_channels() == ["C0PROMPTOPS"]
    due = await core.due_notifications("C0PROMPTOPS")
    assert [d.id for d in due] == sorted(d.id for d in due) and len(due) >= 2
    first = due[0]
    await core.notification_failed(first, retry_in=60, error="ratelimited")
    assert await core.due_notifications("C0PROMPTOPS") == []  # nothing overtakes it
    clock.advance(61)
    again = await core.due_notifications("C0PROMPTOPS")
    assert again[0].id == first.id and again[0].attempts == 1


async def test_a_delivered_parent_becomes_the_thread_of_later_messages(core: Promptship) -> None:
    await push(core)
    await to_staging(core)
    due = await core.due_notifications("C0PROMPTOPS")
    parent = next(d for d in due if d.topic == "request.created")
    await core.notification_sent(parent, "1700000000.000100", starts_thread=True)
    later = [
        d for d in await core.due_notifications("C0PROMPTOPS") if d.thread_key == parent.thread_key
    ]
    assert later and all(d.thread_message_id == "1700000000.000100" for d in later)
    assert await core.outbox_backlog() == len(due) - 1
