"""Delivers the outbox to Slack: one sender per channel, in order, 429s and 5xx retried,
nothing lost while Slack is down, and promotion requests updated in place.

A channel cannot be wedged: an error Slack will answer the same way again (a deleted message,
an archived channel, a bad token …) is not retried, and a notification that still fails after
``max_attempts`` tries is set aside as a dead letter (``promptship outbox list``) so the ones
behind it go out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from aiohttp import ClientError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import messages
from bot.blocks.audit import checkpoint_message
from bot.blocks.common import Message
from bot.blocks.limits import escape
from bot.blocks.links import ConsoleLinks
from promptship.services import Promptship
from promptship.services.outbox import UNDELIVERED_TOPIC, Delivery
from promptship.services.views import RequestView, RollbackResult, RunView

log = logging.getLogger("promptship.slack.dispatcher")

MAX_BACKOFF = 300.0
#: errors Slack answers with HTTP 200 that still mean "try again later"
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
#: an in-place edit Slack refuses for good: the new state goes in as a reply instead
UNEDITABLE = frozenset({"cant_update_message", "edit_window_closed"})
#: the message a thread hangs under is gone
PARENT_GONE = frozenset({"message_not_found", "thread_not_found"})


def render(delivery: Delivery, console: ConsoleLinks | None = None) -> tuple[Message, bool]:
    """The message for a notification, and whether it updates its thread's parent in place;
    ``console`` links it to the web console's pages (None: no links)."""
    payload = delivery.payload
    topic = delivery.topic
    if topic.startswith("request."):
        # only the opening post mentions the approvers: updates ping nobody
        mention = payload.get("mention", []) if topic == "request.created" else []
        return messages.request_message(
            RequestView.model_validate(payload["request"]), mention, console
        ), topic != "request.created"
    if topic == "validation.finished":
        run = RunView.model_validate(payload["run"])
        return messages.run_message(
            payload["prompt"], payload["version"], run, payload.get("failures", []), console
        ), False
    if topic in ("soak.failed", "soak.passed"):
        return messages.soak_result_message(payload, console), False
    if topic == "drift.alert":
        return messages.drift_message(payload, console), False
    if topic == "audit.checkpoint":
        return checkpoint_message(payload), False
    if topic == "deployment.rolled_back":
        return messages.rollback_message(RollbackResult.model_validate(payload["rollback"])), False
    if topic == UNDELIVERED_TOPIC:
        return undelivered_message(payload), False
    raise KeyError(topic)


def undelivered_message(payload: dict[str, Any]) -> Message:
    topic, error = escape(str(payload["topic"])), escape(str(payload["error"]))
    return Message(
        f":warning: A notification could not be delivered: {topic}, {error}. "
        f"See `promptship outbox list` (id {int(payload['outbox_id'])})."
    )


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error") if exc.response is not None else exc)


def _transient(exc: SlackApiError) -> bool:
    """Worth trying again: a 429, a 5xx, or an error that says Slack itself struggled."""
    status = exc.response.status_code if exc.response is not None else 0
    return status == 429 or status >= 500 or _error(exc) in TRANSIENT_ERRORS


def _retry_after(error: SlackApiError, attempts: int) -> float:
    response = error.response
    if response is not None and response.status_code == 429:
        try:
            return float(
                response.headers.get("Retry-After", response.headers.get("retry-after", 1))
            )
        except (TypeError, ValueError):
            return 1.0
    return min(MAX_BACKOFF, 2.0 ** min(attempts, 8))


class SlackDispatcher:
    def __init__(
        self,
        core: Promptship,
        client: AsyncWebClient,
        worker: str,
        poll_interval: float = 0.5,
        on_error: Callable[[str], None] | None = None,
        *,
        max_attempts: int = 8,
        lease_seconds: float = 30.0,
        console: ConsoleLinks | None = None,
    ) -> None:
        self.core = core
        self.client = client
        self.worker = worker
        self.poll_interval = poll_interval
        self.on_error = on_error or (lambda error: None)
        self.max_attempts = max(1, max_attempts)
        self.lease = timedelta(seconds=lease_seconds)
        self.console = console

    async def deliver_once(self) -> int:
        """Deliver what is due on every channel this worker can lease; returns messages sent."""
        sent = 0
        for channel in await self.core.outbox_channels():
            leased_at = self.core.clock.now()  # before the lease is taken: errs on the short side
            if not await self.core.lease_outbox_channel(
                channel, self.worker, self.lease.total_seconds()
            ):
                continue  # another replica is delivering this channel
            try:
                sent += await self._deliver_channel(channel, leased_at)
            finally:
                await self.core.release_outbox_channel(channel, self.worker)
        return sent

    async def _hold_lease(self, channel: str, leased_at: datetime) -> datetime | None:
        """Renew the lease once less than half of it is left; None if another worker has
        taken the channel (what this one fetched may already be sent)."""
        now = self.core.clock.now()
        if now - leased_at < self.lease / 2:
            return leased_at
        if not await self.core.renew_outbox_channel(
            channel, self.worker, self.lease.total_seconds()
        ):
            log.warning("lost the outbox lease of %s; another worker delivers it", channel)
            return None
        return now

    async def _deliver_channel(self, channel: str, leased_at: datetime) -> int:
        sent = 0
        threads: dict[str, str] = {}  # parents posted (or replaced) in this batch
        for delivery in await self.core.due_notifications(channel):
            if delivery.thread_key in threads:
                delivery = replace(delivery, thread_message_id=threads[delivery.thread_key])
            try:
                message, in_place = render(delivery, self.console)
            except (KeyError, ValueError):
                log.info("outbox topic %s has no Slack rendering; skipped", delivery.topic)
                await self.core.notification_sent(delivery, None, starts_thread=False)
                continue
            held = await self._hold_lease(channel, leased_at)
            if held is None:
                return sent
            leased_at = held
            transient = True
            try:
                message_id, starts, replaces = await self._deliver(delivery, message, in_place)
            except SlackApiError as exc:
                error, transient = _error(exc), _transient(exc)
                self.on_error(error)
                delay = _retry_after(exc, delivery.attempts)
            except (TimeoutError, OSError, ClientError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                delay = min(MAX_BACKOFF, 2.0 ** min(delivery.attempts, 8))
            else:
                await self.core.notification_sent(
                    delivery, message_id, starts_thread=starts, replaces_parent=replaces
                )
                if (starts or replaces) and delivery.thread_key and message_id:
                    threads[delivery.thread_key] = message_id
                sent += 1
                continue
            if transient and delivery.attempts + 1 < self.max_attempts:
                log.warning(
                    "slack refused outbox %s (%s); retry in %.0fs", delivery.id, error, delay
                )
                await self.core.notification_failed(delivery, delay, error)
                return sent  # keep the channel's order: nothing overtakes a waiting message
            # set aside: trying again would fail the same way, and the rest must go out
            log.error(
                "outbox %s (%s) is a dead letter after %d tries: %s",
                delivery.id,
                delivery.topic,
                delivery.attempts + 1,
                error,
            )
            await self.core.notification_dead(delivery, error)
        return sent

    async def _deliver(
        self, delivery: Delivery, message: Message, in_place: bool
    ) -> tuple[str | None, bool, bool]:
        """Send one notification: (its message id, starts a thread, replaces the parent).

        An edit Slack refuses for good becomes a reply in the thread; when the thread's
        parent is gone, a new top-level message takes its place."""
        parent = delivery.thread_message_id
        if in_place and parent:
            try:
                await self._call(delivery, message, update=parent)
                return parent, False, False
            except SlackApiError as exc:
                error = _error(exc)
                if error not in UNEDITABLE | PARENT_GONE:
                    raise
                self.on_error(error)
                log.info("could not edit %s in place (%s); posting instead", parent, error)
                if error in PARENT_GONE:
                    return await self._call(delivery, message), False, True
        if parent:
            try:
                return await self._call(delivery, message, thread=parent), False, False
            except SlackApiError as exc:
                if _error(exc) not in PARENT_GONE:
                    raise
                self.on_error(_error(exc))
                # only a request message may stand in for a request thread's parent
                return await self._call(delivery, message), False, in_place
        return await self._call(delivery, message), True, False

    async def _call(
        self,
        delivery: Delivery,
        message: Message,
        *,
        update: str | None = None,
        thread: str | None = None,
    ) -> str:
        """One chat.update (of ``update``) or chat.postMessage (under ``thread``); blocks
        Slack refuses fall back to the plain-text form, so a notification is never lost."""
        try:
            return await self._api(delivery.channel, message.payload(), update, thread)
        except SlackApiError as exc:
            if _error(exc) not in ("invalid_blocks", "invalid_attachments"):
                raise
            log.error("slack refused the blocks of outbox %s: %s", delivery.id, exc)
            return await self._api(
                delivery.channel, Message(message.text).payload(), update, thread
            )

    async def _api(
        self, channel: str, payload: dict[str, Any], update: str | None, thread: str | None
    ) -> str:
        if update:
            await self.client.chat_update(channel=channel, ts=update, **payload)
            return update
        if thread:
            payload = {**payload, "thread_ts": thread}
        response = await self.client.chat_postMessage(channel=channel, **payload)
        return str(response["ts"])

    async def run_forever(self) -> None:
        while True:
            try:
                if not await self.deliver_once():
                    await asyncio.sleep(self.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep delivering; the rows stay pending
                log.exception("outbox dispatcher error")
                await asyncio.sleep(self.poll_interval)
