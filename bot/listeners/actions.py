"""The buttons of promotion requests: Approve and Reject, and on one held back by
regressions, Override with reason (a modal) and Re-run tests."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncRespond
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks import messages, views
from bot.errors import explains_errors
from bot.ids import ActionId
from bot.state import RejectContext, RequestRef
from promptship.domain.identity import Actor
from promptship.errors import BadInput
from promptship.services import Promptship


def _ref(action: dict[str, Any]) -> RequestRef:
    try:
        return RequestRef.model_validate_json(action.get("value") or "")
    except ValueError:
        raise BadInput("this button is from an older message; use /prompt status") from None


@explains_errors
async def approve(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, core: Promptship, actor: Actor
) -> None:
    await ack()
    ref = _ref(action)
    outcome = await core.approve(ref.r, actor, content_hash=ref.h)
    await respond(
        **messages.decision_reply(outcome).payload(),
        response_type="ephemeral",
        replace_original=False,
    )


@explains_errors
async def reject(
    ack: AsyncAck,
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond,
) -> None:
    await ack()
    ref = _ref(action)
    # trigger_id expires 3 s after the click: open the modal before anything slow
    meta = RejectContext(r=ref.r, h=ref.h, c=(body.get("channel") or {}).get("id"))
    await client.views_open(
        trigger_id=body["trigger_id"],
        view=views.reject_modal(meta.model_dump_json(), f"request req-{ref.r}"),
    )


@explains_errors
async def override(
    ack: AsyncAck,
    action: dict[str, Any],
    body: dict[str, Any],
    client: AsyncWebClient,
    respond: AsyncRespond,  # explains_errors answers through it: a stale button, a failed modal
) -> None:
    await ack()
    ref = _ref(action)
    # trigger_id expires 3 s after the click: the modal opens first, the approver rule is
    # applied when it is submitted (the service decides who may, not the button)
    meta = RejectContext(r=ref.r, h=ref.h, u=ref.u, c=(body.get("channel") or {}).get("id"))
    await client.views_open(
        trigger_id=body["trigger_id"],
        view=views.override_modal(meta.model_dump_json(), f"request req-{ref.r}"),
    )


@explains_errors
async def rerun(
    ack: AsyncAck, action: dict[str, Any], respond: AsyncRespond, core: Promptship, actor: Actor
) -> None:
    await ack()
    ref = _ref(action)
    view = await core.rerun_request_tests(ref.r, actor, content_hash=ref.h)
    await respond(
        **messages.rerun_reply(view).payload(),
        response_type="ephemeral",
        replace_original=False,
    )


def register(app: AsyncApp) -> None:
    app.action(ActionId.APPROVE)(approve)
    app.action(ActionId.REJECT)(reject)
    app.action(ActionId.OVERRIDE)(override)
    app.action(ActionId.RERUN)(rerun)
