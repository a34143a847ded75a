"""The one place listener errors become replies.

Bolt acks asynchronously; an exception that escapes a listener right after ``ack()`` can
overwrite the ack (Slack then sees an error), so listeners are wrapped here instead of
relying on ``app.error`` alone: a user's mistake becomes an ephemeral message saying what
was wrong and the right form; anything else is logged and the user told so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.blocks import messages
from promptship.errors import PromptshipError

log = logging.getLogger("promptship.slack")

Listener = Callable[..., Awaitable[None]]


def explains_errors(listener: Listener) -> Listener:
    """Wrap a listener that takes ``respond``; Bolt still injects the listener's own args."""

    @functools.wraps(listener)
    async def wrapper(**kwargs: Any) -> None:
        try:
            await listener(**kwargs)
        except PromptshipError as exc:
            await _reply(kwargs.get("respond"), messages.error_message(exc.message, exc.hint))
        except Exception:
            log.exception("error handling a Slack request")
            await _reply(
                kwargs.get("respond"),
                messages.error_message("Something went wrong on our side; it was logged."),
            )

    return wrapper


async def _reply(respond: Any, reply: messages.Message) -> None:
    if respond is None:
        return
    await respond(**reply.payload(), response_type="ephemeral", replace_original=False)
