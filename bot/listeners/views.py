"""The reason modals: rejecting a request, overriding the regressions that hold one back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import messages
from bot.blocks.common import Message
from bot.ids import BlockId, CallbackId, InputActionId
from bot.state import RejectContext
from promptship.domain.identity import Actor
from promptship.errors import PromptshipError
from promptship.services import Promptship


def _reason(view: dict[str, Any]) -> str:
    return (
        ((view.get("state") or {}).get("values") or {})
        .get(BlockId.REASON, {})
        .get(InputActionId.VALUE, {})
        .get("value")
        or ""
    ).strip()


#: the modal's answer when its private_metadata is not a request reference
STALE = "This form no longer names a request: close it and use the buttons on the request."


def _meta(view: dict[str, Any]) -> RejectContext | None:
    """The request the modal is about, or None when its private_metadata is malformed
    (answered in the modal, before it closes, rather than with an error after)."""
    try:
        return RejectContext.model_validate_json(view.get("private_metadata") or "")
    except ValueError:
        return None


async def _answer_reason(
    ack: AsyncAck,
    view: dict[str, Any],
    client: AsyncWebClient,
    actor: Actor,
    ask: str,
    act: Callable[[RejectContext, str], Awaitable[Message]],
) -> None:
    """A reason modal's submission: refuse an empty reason or a stale form inside the modal,
    else close it, act, and answer the person privately in the channel."""
    reason = _reason(view)
    if not reason:
        await ack(response_action="errors", errors={BlockId.REASON: ask})
        return
    meta = _meta(view)
    if meta is None:
        await ack(response_action="errors", errors={BlockId.REASON: STALE})
        return
    await ack()
    try:
        reply = await act(meta, reason)
    except PromptshipError as exc:
        reply = messages.error_message(exc.message, exc.hint)
    if meta.c:  # no response_url on a modal: answer the person privately in the channel
        await client.chat_postEphemeral(channel=meta.c, user=actor.id, **reply.payload())


async def override_reason(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, core: Promptship, actor: Actor
) -> None:
    async def override(meta: RejectContext, reason: str) -> Message:
        request = await core.override_request(
            meta.r, actor, reason, content_hash=meta.h, run_id=meta.u
        )
        return messages.override_reply(request)

    await _answer_reason(ack, view, client, actor, "Say why they are fine.", override)


async def reject_reason(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, core: Promptship, actor: Actor
) -> None:
    async def reject(meta: RejectContext, reason: str) -> Message:
        outcome = await core.reject(meta.r, actor, reason, content_hash=meta.h)
        return messages.decision_reply(outcome)

    await _answer_reason(ack, view, client, actor, "Say why you reject it.", reject)


def register(app: AsyncApp) -> None:
    app.view(CallbackId.REJECT_REASON)(reject_reason)
    app.view(CallbackId.OVERRIDE_REASON)(override_reason)
