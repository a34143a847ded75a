"""Slack's hard limits and the one truncation helper that keeps every block inside them."""

from __future__ import annotations

from typing import Any

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
SECTION_TEXT = 3000
FIELD_TEXT = 2000
SECTION_FIELDS = 10
HEADER_TEXT = 150
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
ACTION_ID = 255
BLOCK_ID = 255
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
MODAL_TITLE = 24
MESSAGE_TEXT = 40_000
ELLIPSIS = "…"

Block = dict[str, Any]


def escape(text: str) -> str:
    """Escape user- or prompt-supplied text for mrkdwn: ``<!channel>`` must not ping anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int, where: str | None = None) -> str:
    """Cut ``text`` to ``limit`` characters with a visible “…”, saying where the rest is."""
    if len(text) <= limit:
        return text
    tail = f"{ELLIPSIS} (full text: {where})" if where else ELLIPSIS
    if len(tail) >= limit:
        tail = ELLIPSIS
    cut = text[: limit - len(tail)]
    # never split an escape sequence such as "&amp;" in half
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp < 6:
        cut = cut[:amp]
    return cut + tail


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(text, limit), "emoji": True}


def mrkdwn(text: str, limit: int = SECTION_TEXT) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(text, limit)}


def section(text: str, block_id: str | None = None, where: str | None = None) -> Block:
    block: Block = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(text, SECTION_TEXT, where)},
    }
    if block_id:
        block["block_id"] = block_id[:BLOCK_ID]
    return block


def fields(pairs: list[str], block_id: str | None = None) -> Block:
    block: Block = {
        "type": "section",
        "fields": [mrkdwn(p, FIELD_TEXT) for p in pairs[:SECTION_FIELDS]],
    }
    if block_id:
        block["block_id"] = block_id[:BLOCK_ID]
    return block


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, HEADER_TEXT)}


def context(*texts: str, block_id: str | None = None) -> Block:
    block: Block = {
        "type": "context",
        "elements": [mrkdwn(t, SECTION_TEXT) for t in texts[:CONTEXT_ELEMENTS]],
    }
    if block_id:
        block["block_id"] = block_id[:BLOCK_ID]
    return block


def divider() -> Block:
    return {"type": "divider"}


def unfenced(text: str) -> str:
    """``text`` that cannot close the ``` fence it is shown in: a zero-width space between
    any two backticks (twice, as the pairs overlap), and between a backtick at either end
    and the fence's own."""
    text = text.replace("``", "`\u200b`").replace("``", "`\u200b`")
    if text.startswith("`"):
        text = "\u200b" + text
    return text + "\u200b" if text.endswith("`") else text


def code(text: str, where: str | None = None) -> Block:
    """A preformatted section (``` fenced), truncated inside the fence; backticks in
    ``text`` never close it early."""
    body = truncate(unfenced(escape(text)), SECTION_TEXT - 8, where)
    return {"type": "section", "text": {"type": "mrkdwn", "text": f"```{body}```"}}


def cap(blocks: list[Block], limit: int = MESSAGE_BLOCKS, where: str | None = None) -> list[Block]:
    """Keep at most ``limit`` blocks; the last says how many were left out and where they are."""
    if len(blocks) <= limit:
        return blocks
    kept = blocks[: limit - 1]
    more = len(blocks) - len(kept)
    note = f"{ELLIPSIS} {more} more not shown" + (f": {where}" if where else "")
    return [*kept, context(note)]
