"""The reason modals: rejecting a request, overriding the regressions that hold one back."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import messages
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


async def override_reason(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, core: Promptship, actor: Actor
) -> None:
    reason = _reason(view)
    if not reason:
        await ack(response_action="errors", errors={BlockId.REASON: "Say why they are fine."})
        return
    meta = _meta(view)
    if meta is None:
        await ack(response_action="errors", errors={BlockId.REASON: STALE})
        return
    await ack()
    try:
        request = await core.override_request(
            meta.r, actor, reason, content_hash=meta.h, run_id=meta.u
        )
        reply = messages.override_reply(request)
    except PromptshipError as exc:
        reply = messages.error_message(exc.message, exc.hint)
    if meta.c:  # no response_url on a modal: answer the person privately in the channel
        await client.chat_postEphemeral(channel=meta.c, user=actor.id, **reply.payload())


async def reject_reason(
    ack: AsyncAck, view: dict[str, Any], client: AsyncWebClient, core: Promptship, actor: Actor
) -> None:
    reason = _reason(view)
    if not reason:
        await ack(response_action="errors", errors={BlockId.REASON: "Say why you reject it."})
        return
    meta = _meta(view)
    if meta is None:
        await ack(response_action="errors", errors={BlockId.REASON: STALE})
        return
    await ack()
    try:
        outcome = await core.reject(meta.r, actor, reason, content_hash=meta.h)
        reply = messages.decision_reply(outcome)
    except PromptshipError as exc:
        reply = messages.error_message(exc.message, exc.hint)
    if meta.c:  # no response_url on a modal: answer the person privately in the channel
        await client.chat_postEphemeral(channel=meta.c, user=actor.id, **reply.payload())


def register(app: AsyncApp) -> None:
    app.view(CallbackId.REJECT_REASON)(reject_reason)
    app.view(CallbackId.OVERRIDE_REASON)(override_reason)
