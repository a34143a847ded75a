"""The signed audit checkpoint, as posted to the policy channel.

The message's text is the checkpoint's machine-readable line, so ``promptship audit verify
--from-slack`` reads it back from the channel's history exactly as it was signed.
"""

from __future__ import annotations

from typing import Any

from bot.blocks.common import Message
from bot.blocks.limits import code, context, escape, section
from promptship.services.checkpoints import from_json


def checkpoint_message(payload: dict[str, Any]) -> Message:
    """A checkpoint (the outbox payload: seq, hash, at, key, mac, reason)."""
    checkpoint = from_json(payload)
    reason = checkpoint.reason
    made = {"scheduled": "hourly", "requested": "on request", "": "on request"}.get(
        reason, f"after {escape(reason)}"
    )
    return Message(
        checkpoint.line(),
        [
            section(
                f"🔏 *Audit checkpoint*: the log's first {checkpoint.seq:,} events, "
                f"signed with key `{escape(checkpoint.key_id)}` ({made})"
            ),
            code(checkpoint.line()),
            context(
                "Keep this message: `promptship audit verify --from-slack` compares the log "
                "with it, so deleting the newest events cannot go unnoticed."
            ),
        ],
    )
