"""The ephemeral answers to ``/prompt token``: a token just made, and one revoked.

The secret is only in the blocks, never in the fallback text Slack shows in notifications.
"""

from __future__ import annotations

from bot.blocks.common import Message, who
from bot.blocks.limits import code, context, escape, section
from promptship.services.tokens import SERVER_PLACEHOLDER
from promptship.services.views import IssuedToken, TokenView

#: a configured server address longer than this is cut (it is shown in a code block)
MAX_SERVER = 200


def _until(token: TokenView) -> str:
    if token.expires_at is None:
        return "until revoked"
    return f"until {token.expires_at:%Y-%m-%d} (UTC)"


def token_message(issued: IssuedToken, server: str | None) -> Message:
    """A person's new token: what it may do, how to use it (against ``server``, this
    server's public address when configured), how to revoke it."""
    t = issued.token
    server = (server or SERVER_PLACEHOLDER).rstrip("/")[:MAX_SERVER]
    return Message(
        f"Your promptship token ({t.scope} scope) is shown once in this message",
        [
            section(
                f"🔑 *Your promptship token* — scope *{escape(t.scope)}*, valid {_until(t)}. "
                "It is shown this once: store it now (a password manager, your CI's secrets). "
                "Only you can see this message."
            ),
            code(f"export PROMPTSHIP_SERVER={server}\nexport PROMPTSHIP_TOKEN={issued.secret}"),
            section(
                'With these set, `promptship push prompts/ --server "$PROMPTSHIP_SERVER"` and '
                "the API (`Authorization: Bearer $PROMPTSHIP_TOKEN`) act as you, "
                f"{who(t.subject)}, within the token's scope."
            ),
            context(
                f"Revoke it: `/prompt token revoke {escape(t.prefix)}` "
                f"(an admin: `promptship token revoke {escape(t.prefix)}`)."
            ),
        ],
    )


def token_revoked_message(token: TokenView) -> Message:
    text = f"Token {token.prefix}… ({token.scope}) is revoked: it no longer works."
    return Message(text, [section(escape(text))])
