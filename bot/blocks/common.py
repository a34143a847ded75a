"""What every message builder shares: the message shape, how people are named, gate marks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.blocks.limits import (
    CONFIRM_BUTTON,
    CONFIRM_TEXT,
    CONFIRM_TITLE,
    MESSAGE_TEXT,
    Block,
    escape,
    plain,
    truncate,
)

_SLACK_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_GROUP_ID = re.compile(r"S[A-Z0-9]{2,}")
MARK = {"passed": "✅", "waiting": "⏳", "failed": "❌"}


@dataclass(frozen=True)
class Message:
    """Blocks plus the plain-text fallback Slack shows in notifications."""

    text: str
    blocks: list[Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", truncate(self.text, MESSAGE_TEXT))

    def payload(self) -> dict[str, Any]:
        if not self.blocks:
            return {"text": self.text}
        return {"text": self.text, "blocks": self.blocks}


def who(user: str) -> str:
    """Mention a Slack user; show anything else (a CLI name) as escaped text."""
    return f"<@{user}>" if _SLACK_ID.fullmatch(user) else escape(user)


def ping(member: str) -> str:
    """Mention a role member: a user, or a user group (``S…``) as a whole."""
    return f"<!subteam^{member}>" if _GROUP_ID.fullmatch(member) else who(member)


def unverified(via: str | None) -> str:
    """The mark of a decision made from the local CLI (allowed by ``local_decisions``)."""
    return " via local CLI, unverified" if via == "local" else ""


def confirm(title: str, text: str, button: str, style: str | None = None) -> dict[str, Any]:
    """A confirm dialog, within its limits."""
    dialog: dict[str, Any] = {
        "title": plain(title, CONFIRM_TITLE),
        "text": {"type": "mrkdwn", "text": truncate(text, CONFIRM_TEXT)},
        "confirm": plain(button, CONFIRM_BUTTON),
        "deny": plain("Cancel", CONFIRM_BUTTON),
    }
    if style:
        dialog["style"] = style
    return dialog
