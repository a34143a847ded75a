"""Slack's Block Kit limits, and a check that names everything Slack would refuse in a list
of blocks (the Slack double answers ``invalid_blocks`` with these problems)."""

from __future__ import annotations

from typing import Any

LIMITS = {
    "message_blocks": 50,
    "view_blocks": 100,
    "section_text": 3000,
    "field_text": 2000,
    "fields": 10,
    "header_text": 150,
    "button_text": 75,
    "button_value": 2000,
    "action_id": 255,
    "block_id": 255,
    "context_elements": 10,
    "actions_elements": 25,
    "confirm_title": 100,
    "confirm_text": 300,
    "confirm_button": 30,
    "modal_title": 24,
    "private_metadata": 3000,
    "callback_id": 255,
    "message_text": 40_000,
}


def block_problems(blocks: Any, *, limit: int) -> list[str]:
    """Everything Slack would refuse in a list of blocks, in plain words."""
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        return ["blocks must be a list"]
    problems: list[str] = []
    if len(blocks) > limit:
        problems.append(f"{len(blocks)} blocks > {limit}")
    block_ids: set[str] = set()

    def text_len(obj: Any, max_len: int, where: str, plain_only: bool = False) -> None:
        if not isinstance(obj, dict) or "text" not in obj:
            problems.append(f"{where}: missing text object")
            return
        if plain_only and obj.get("type") != "plain_text":
            problems.append(f"{where}: must be plain_text")
        if obj.get("type") not in ("plain_text", "mrkdwn"):
            problems.append(f"{where}: bad text type {obj.get('type')!r}")
        text = obj.get("text")
        if not isinstance(text, str) or not text:
            problems.append(f"{where}: empty text")
        elif len(text) > max_len:
            problems.append(f"{where}: {len(text)} chars > {max_len}")

    def element(e: dict[str, Any], where: str, action_ids: set[str]) -> None:
        aid = e.get("action_id")
        if aid is not None:
            if len(aid) > LIMITS["action_id"]:
                problems.append(f"{where}: action_id too long")
            if aid in action_ids:
                problems.append(f"{where}: duplicate action_id {aid!r}")
            action_ids.add(aid)
        if e.get("type") == "button":
            text_len(e.get("text"), LIMITS["button_text"], f"{where}.text", plain_only=True)
            if len(str(e.get("value", ""))) > LIMITS["button_value"]:
                problems.append(f"{where}: button value too long")
            confirm = e.get("confirm")
            if confirm is not None:
                text_len(
                    confirm.get("title"), LIMITS["confirm_title"], f"{where}.confirm.title", True
                )
                text_len(confirm.get("text"), LIMITS["confirm_text"], f"{where}.confirm.text")
                text_len(
                    confirm.get("confirm"),
                    LIMITS["confirm_button"],
                    f"{where}.confirm.confirm",
                    True,
                )
                text_len(
                    confirm.get("deny"), LIMITS["confirm_button"], f"{where}.confirm.deny", True
                )

    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or "type" not in block:
            problems.append(f"{where}: not a block")
            continue
        bid = block.get("block_id")
        if bid is not None:
            if len(bid) > LIMITS["block_id"]:
                problems.append(f"{where}: block_id too long")
            if bid in block_ids:
                problems.append(f"{where}: duplicate block_id {bid!r}")
            block_ids.add(bid)
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: section needs text or fields")
            if "text" in block:
                text_len(block["text"], LIMITS["section_text"], f"{where}.text")
            fields_ = block.get("fields", [])
            if len(fields_) > LIMITS["fields"]:
                problems.append(f"{where}: {len(fields_)} fields > 10")
            for j, f in enumerate(fields_):
                text_len(f, LIMITS["field_text"], f"{where}.fields[{j}]")
        elif kind == "header":
            text_len(block.get("text"), LIMITS["header_text"], f"{where}.text", plain_only=True)
        elif kind == "context":
            elements = block.get("elements", [])
            if not elements or len(elements) > LIMITS["context_elements"]:
                problems.append(f"{where}: context needs 1-10 elements")
            for j, e in enumerate(elements):
                if e.get("type") in ("mrkdwn", "plain_text"):
                    text_len(e, LIMITS["section_text"], f"{where}.elements[{j}]")
        elif kind == "actions":
            elements = block.get("elements", [])
            if not elements or len(elements) > LIMITS["actions_elements"]:
                problems.append(f"{where}: actions need 1-25 elements")
            seen: set[str] = set()
            for j, e in enumerate(elements):
                element(e, f"{where}.elements[{j}]", seen)
        elif kind == "input":
            text_len(block.get("label"), 2000, f"{where}.label", plain_only=True)
            if "element" not in block:
                problems.append(f"{where}: input needs an element")
        elif kind not in ("divider", "image", "rich_text"):
            problems.append(f"{where}: unknown block type {kind!r}")
    return problems
