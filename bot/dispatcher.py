"""Delivers the outbox to Slack: one sender per channel, in order, 429s and 5xx retried,
nothing lost while Slack is down, and promotion requests updated in place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import messages
from bot.blocks.messages import Message
from promptship.services import Promptship
from promptship.services.outbox import Delivery
from promptship.services.views import RequestView, RollbackResult, RunView

log = logging.getLogger("promptship.slack.dispatcher")

MAX_BACKOFF = 300.0


def render(delivery: Delivery) -> tuple[Message, bool]:
    """The message for a notification, and whether it updates its thread's parent in place."""
    payload = delivery.payload
    topic = delivery.topic
    if topic.startswith("request."):
        return messages.request_message(
            RequestView.model_validate(payload["request"])
        ), topic != "request.created"
    if topic == "validation.finished":
        run = RunView.model_validate(payload["run"])
        return messages.run_message(
            payload["prompt"], payload["version"], run, payload.get("failures", [])
        ), False
    if topic in ("soak.failed", "soak.passed"):
        return messages.soak_result_message(payload), False
    if topic == "drift.alert":
        return messages.drift_message(payload), False
    if topic == "deployment.rolled_back":
        return messages.rollback_message(RollbackResult.model_validate(payload["rollback"])), False
    raise KeyError(topic)


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error") if exc.response is not None else exc)


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
    ) -> None:
        self.core = core
        self.client = client
        self.worker = worker
        self.poll_interval = poll_interval
        self.on_error = on_error or (lambda error: None)

    async def deliver_once(self) -> int:
        """Deliver what is due on every channel this worker can lease; returns messages sent."""
        sent = 0
        for channel in await self.core.outbox_channels():
            if not await self.core.lease_outbox_channel(channel, self.worker):
                continue  # another replica is delivering this channel
            try:
                sent += await self._deliver_channel(channel)
            finally:
                await self.core.release_outbox_channel(channel, self.worker)
        return sent

    async def _deliver_channel(self, channel: str) -> int:
        sent = 0
        threads: dict[str, str] = {}  # parents posted in this batch, not in the fetched rows
        for delivery in await self.core.due_notifications(channel):
            if delivery.thread_key in threads and not delivery.thread_message_id:
                delivery = replace(delivery, thread_message_id=threads[delivery.thread_key])
            try:
                message, in_place = render(delivery)
            except (KeyError, ValueError):
                log.info("outbox topic %s has no Slack rendering; skipped", delivery.topic)
                await self.core.notification_sent(delivery, None, starts_thread=False)
                continue
            try:
                try:
                    message_id, starts = await self._send(delivery, message, in_place)
                except SlackApiError as exc:
                    if _error(exc) not in ("invalid_blocks", "invalid_attachments"):
                        raise
                    # never drop a notification: fall back to its plain-text form
                    log.error("slack refused the blocks of outbox %s: %s", delivery.id, exc)
                    message_id, starts = await self._send(delivery, Message(message.text), in_place)
            except SlackApiError as exc:
                delay = _retry_after(exc, delivery.attempts)
                error = _error(exc)
                self.on_error(error)
                log.warning(
                    "slack refused outbox %s (%s); retry in %.0fs", delivery.id, error, delay
                )
                await self.core.notification_failed(delivery, delay, error)
                return sent  # keep the channel's order: nothing overtakes a waiting message
            except (TimeoutError, OSError) as exc:
                delay = min(MAX_BACKOFF, 2.0 ** min(delivery.attempts, 8))
                await self.core.notification_failed(delivery, delay, f"{type(exc).__name__}: {exc}")
                return sent
            await self.core.notification_sent(delivery, message_id, starts_thread=starts)
            if starts and delivery.thread_key and message_id:
                threads[delivery.thread_key] = message_id
            sent += 1
        return sent

    async def _send(
        self, delivery: Delivery, message: Message, in_place: bool
    ) -> tuple[str | None, bool]:
        payload: dict[str, Any] = message.payload()
        parent = delivery.thread_message_id
        if in_place and parent:
            await self.client.chat_update(channel=delivery.channel, ts=parent, **payload)
            return parent, False
        if parent:
            response = await self.client.chat_postMessage(
                channel=delivery.channel, thread_ts=parent, **payload
            )
            return str(response["ts"]), False
        response = await self.client.chat_postMessage(channel=delivery.channel, **payload)
        return str(response["ts"]), True

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
