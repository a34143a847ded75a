"""``/prompt``: parse the text, call one service, answer through ``response_url``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncRespond
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.blocks import messages, tokens
from bot.blocks.common import Message
from bot.blocks.limits import escape, section
from bot.blocks.links import ConsoleLinks
from bot.errors import explains_errors
from bot.grammar import Command, Verb, parse
from bot.ids import COMMAND
from promptship.domain.identity import Actor, Scope
from promptship.errors import BadInput
from promptship.services import Promptship
from promptship.services.views import DeploymentMove

log = logging.getLogger("promptship.slack")

#: a verb's handler: the command, the services, who acts, and the console's links (None when
#: no public URL is configured)
Handler = Callable[
    [Command, Promptship, Actor, ConsoleLinks | None], Awaitable[tuple[Message, bool]]
]


async def _help(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    return messages.help_message(), False


async def _status(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    statuses = await core.status(cmd.name)
    return messages.status_message(statuses, core.policy.environments.names), False


async def _show(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    return messages.version_message(await core.show(cmd.name or "", cmd.version)), False


async def _diff(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    result = await core.diff(cmd.name or "", cmd.version or "", cmd.other_version or "")
    return messages.diff_message(result), False


async def _test(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    run = await core.queue_validation_run(cmd.name or "", cmd.version or "", actor)
    text = (
        f"Queued test run {run.id} of {cmd.name} {cmd.version} ({run.total} cases); "
        "the result will be posted to the channel."
    )
    return Message(text, [section(escape(text))]), False


async def _promote(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    result = await core.promote(
        cmd.name or "", cmd.version or "", cmd.environment or "", actor, cmd.text, queue_tests=True
    )
    if isinstance(result, DeploymentMove):
        return messages.move_message(result), False
    return messages.request_message(result, console=console), False


async def _approve(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    outcome = await core.approve(cmd.request_id or 0, actor, cmd.text)
    return messages.decision_reply(outcome), False


async def _reject(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    outcome = await core.reject(cmd.request_id or 0, actor, cmd.text or "")
    return messages.decision_reply(outcome), False


async def _cancel(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    return messages.request_message(
        await core.cancel(cmd.request_id or 0, actor), console=console
    ), False


async def _rollback(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    result = await core.rollback(
        cmd.name or "", cmd.environment or "", actor, cmd.version, cmd.text
    )
    return messages.rollback_message(result), True  # everyone in the channel sees it at once


async def _breakglass(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    request = await core.breakglass(
        cmd.name or "", cmd.version or "", actor, cmd.text or "", queue_tests=True
    )
    return messages.request_message(request, console=console), False


async def _history(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    page = await core.history(cmd.name or "", cmd.environment)
    return messages.history_message(page), False


async def _soak(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    return messages.soak_message(await core.soak_status(cmd.name or ""), console), False


async def _soak_restart(
    cmd: Command, core: Promptship, actor: Actor, console: ConsoleLinks | None
) -> tuple[Message, bool]:
    started = await core.restart_soak(cmd.name or "", actor, cmd.version)
    return messages.soak_restarted_message(cmd.name or "", started, actor.id, console), True


async def _token(cmd: Command, core: Promptship, actor: Actor, public_url: str | None) -> Message:
    """The person's own token, or one of theirs revoked; always answered ephemerally."""
    if cmd.token is not None:
        return tokens.token_revoked_message(await core.revoke_token(cmd.token, actor, own=True))
    issued = await core.create_own_token(actor, Scope(cmd.scope) if cmd.scope else None)
    return tokens.token_message(issued, public_url)


HANDLERS: dict[Verb, Handler] = {
    Verb.HELP: _help,
    Verb.STATUS: _status,
    Verb.SHOW: _show,
    Verb.DIFF: _diff,
    Verb.TEST: _test,
    Verb.PROMOTE: _promote,
    Verb.APPROVE: _approve,
    Verb.REJECT: _reject,
    Verb.CANCEL: _cancel,
    Verb.ROLLBACK: _rollback,
    Verb.BREAKGLASS: _breakglass,
    Verb.HISTORY: _history,
    Verb.SOAK: _soak,
    Verb.SOAK_RESTART: _soak_restart,
}


#: work after the ack (queries, the answer to Slack) runs a few commands at a time, so a
#: burst of commands cannot crowd the event loop and delay the next commands' acks.
_AFTER_ACK = asyncio.Semaphore(4)


@explains_errors
async def prompt_command(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    request: AsyncBoltRequest,
    core: Promptship,
    actor: Actor,
    public_url: str | None = None,
) -> None:
    # the ack comes before any database write: a writer holding the lock (a validation run,
    # the soak scheduler) must not push it past Slack's 3 s
    await ack()
    async with _AFTER_ACK:
        if await _replayed(request, command, respond, core, actor):
            return
        await _answer(command, respond, core, actor, public_url)


async def _answer(
    command: dict[str, Any],
    respond: AsyncRespond,
    core: Promptship,
    actor: Actor,
    public_url: str | None = None,
) -> None:
    parsed = parse(command.get("text", ""))
    if parsed.verb is Verb.TOKEN:  # a secret: only ever to the person who asked
        reply, in_channel = await _token(parsed, core, actor, public_url), False
    else:
        console = ConsoleLinks.from_public_url(public_url)
        reply, in_channel = await HANDLERS[parsed.verb](parsed, core, actor, console)
    await respond(
        **reply.payload(),
        response_type="in_channel" if in_channel else "ephemeral",
        replace_original=False,
    )


#: commands that change something: a replay of one of these signed requests must not act again
ACTS_ONCE = frozenset(
    {Verb.ROLLBACK, Verb.PROMOTE, Verb.BREAKGLASS, Verb.CANCEL, Verb.APPROVE, Verb.REJECT,
     Verb.TOKEN, Verb.SOAK_RESTART}
)  # fmt: skip


def _acts_once(text: str) -> bool:
    try:
        return parse(text).verb in ACTS_ONCE
    except BadInput:
        return False  # the listener answers with the right form; nothing acts


async def _replayed(
    req: AsyncBoltRequest,
    command: dict[str, Any],
    respond: AsyncRespond,
    core: Promptship,
    actor: Actor,
) -> bool:
    """Whether this signed request was received before (and is answered as such, acting not).

    The fingerprint covers the signed timestamp and the raw body, so a captured request sent
    again, a retry or the same request reaching a second replica acts once, while the same
    command typed again (a new request) goes through.
    """
    signed_at = (req.headers.get("x-slack-request-timestamp") or [""])[0]
    if not signed_at or not _acts_once(str(command.get("text", ""))):
        return False  # Socket Mode requests carry no signature to replay
    receipt = await core.receive_command(signed_at, req.raw_body, actor)
    if receipt.first:
        return False
    log.warning("replayed slash command from %s refused (first received %s)",
                actor.id, receipt.received_at.isoformat())  # fmt: skip
    text = (
        f"This command was already received at {receipt.received_at:%H:%M:%S} UTC; "
        "nothing was done again."
    )
    reply = Message(text, [section(escape(text))])
    await respond(**reply.payload(), response_type="ephemeral", replace_original=False)
    return True


def register(app: AsyncApp) -> None:
    app.command(COMMAND)(prompt_command)
