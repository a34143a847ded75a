"""Every Slack identifier the bot uses, in one place: blocks and listeners both import these."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class CallbackId(StrEnum):
    REJECT_REASON = "reject_reason"


class BlockId(StrEnum):
    SUMMARY = "summary"
    CHECKLIST = "checklist"
    DECISION = "decision"
    REASON = "reason"
    CONTEXT = "context"


class InputActionId(StrEnum):
    VALUE = "value"


COMMAND = "/prompt"
