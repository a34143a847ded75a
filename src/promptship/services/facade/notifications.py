"""Notifications: the outbox the Slack dispatcher delivers through, and its dead letters."""

from __future__ import annotations

from datetime import timedelta

from promptship.domain.identity import Actor
from promptship.services import outbox
from promptship.services.facade.base import UseCaseBase


class NotificationUseCases(UseCaseBase):
    """The outbox: channel leases, deliveries and dead letters."""

    async def outbox_channels(self) -> list[str]:
        async with self.db.reader() as session:
            return await outbox.pending_channels(session, self.clock)

    async def lease_outbox_channel(self, channel: str, worker: str, seconds: float = 30.0) -> bool:
        async with self.db.transaction() as session:
            return await outbox.lease_channel(
                session, self.clock, channel, worker, timedelta(seconds=seconds)
            )

    async def renew_outbox_channel(self, channel: str, worker: str, seconds: float = 30.0) -> bool:
        async with self.db.transaction() as session:
            return await outbox.renew_channel(
                session, self.clock, channel, worker, timedelta(seconds=seconds)
            )

    async def release_outbox_channel(self, channel: str, worker: str) -> None:
        async with self.db.transaction() as session:
            await outbox.release_channel(session, channel, worker)

    async def due_notifications(self, channel: str, limit: int = 20) -> list[outbox.Delivery]:
        async with self.db.reader() as session:
            return await outbox.due(session, self.clock, channel, limit)

    async def notification_sent(
        self,
        delivery: outbox.Delivery,
        message_id: str | None,
        *,
        starts_thread: bool,
        replaces_parent: bool = False,
    ) -> None:
        async with self.db.transaction() as session:
            await outbox.mark_sent(
                session, self.clock, delivery, message_id, starts_thread, replaces_parent
            )

    async def notification_failed(
        self, delivery: outbox.Delivery, retry_in: float, error: str
    ) -> None:
        async with self.db.transaction() as session:
            await outbox.mark_retry(
                session, self.clock, delivery, timedelta(seconds=retry_in), error
            )

    async def notification_dead(self, delivery: outbox.Delivery, error: str) -> bool:
        """Set a notification aside (a dead letter) and alert its channel."""
        async with self.db.transaction() as session:
            return await outbox.mark_dead(session, self.clock, delivery, error)

    async def outbox_backlog(self) -> int:
        async with self.db.reader() as session:
            return await outbox.backlog(session)

    async def outbox_dead_letters(self) -> list[outbox.DeadLetter]:
        async with self.db.reader() as session:
            return await outbox.dead_letters(session)

    async def retry_dead_letters(
        self, ids: list[int] | None, actor: Actor
    ) -> list[outbox.DeadLetter]:
        """Put dead letters back in line (``None``: all of them)."""
        async with self.db.transaction() as session:
            return await outbox.retry_dead(session, self.clock, ids, actor)

    async def drop_dead_letter(self, id: int, actor: Actor) -> outbox.DeadLetter:
        async with self.db.transaction() as session:
            return await outbox.drop_dead(session, self.clock, id, actor)
