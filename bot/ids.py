"""Every Slack identifier the bot uses, in one place: blocks and listeners both import these."""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    OVERRIDE = "override"
    RERUN = "rerun"


class CallbackId(StrEnum):
    REJECT_REASON = "reject_reason"
    OVERRIDE_REASON = "override_reason"


class BlockId(StrEnum):
    SUMMARY = "summary"
    CHECKLIST = "checklist"
    DECISION = "decision"
    REASON = "reason"
    CONTEXT = "context"
    APPROVERS = "approvers"
    EVIDENCE = "evidence"
    DIFF = "diff"
    DIFF_NOTE = "diff_note"
    BLOCKED = "blocked"
    BLOCKED_NOTE = "blocked_note"


class InputActionId(StrEnum):
    VALUE = "value"


COMMAND = "/prompt"
