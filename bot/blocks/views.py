"""Modals and the App Home tab."""

from __future__ import annotations

from typing import Any

from bot.blocks.common import MARK, who
from bot.blocks.limits import (
    MODAL_TITLE,
    VIEW_BLOCKS,
    Block,
    cap,
    context,
    divider,
    escape,
    header,
    plain,
    section,
)
from bot.ids import BlockId, CallbackId, InputActionId
from promptship.services.views import AuditEventView, PromptStatus, RequestView, SoakView


def reject_modal(private_metadata: str, label: str) -> dict[str, Any]:
    return _reason_modal(
        CallbackId.REJECT_REASON,
        private_metadata,
        "Reject promotion",
        "Reject",
        f"Rejecting *{escape(label)}* closes the request. Say why:",
    )


def override_modal(private_metadata: str, label: str) -> dict[str, Any]:
    """Accepting the regressions that hold a request back: approvers only, with a reason."""
    return _reason_modal(
        CallbackId.OVERRIDE_REASON,
        private_metadata,
        "Override regressions",
        "Override",
        f"Accept the regressions of *{escape(label)}*: cases that pass in production fail "
        "here. Only approvers can; your name and reason go in the audit log. Say why:",
    )


def _reason_modal(
    callback_id: str, private_metadata: str, title: str, submit: str, prompt: str
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": private_metadata,
        "title": plain(title, MODAL_TITLE),
        "submit": plain(submit, MODAL_TITLE),
        "close": plain("Cancel", MODAL_TITLE),
        "blocks": [
            section(prompt),
            {
                "type": "input",
                "block_id": BlockId.REASON,
                "label": plain("Reason", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": InputActionId.VALUE,
                    "multiline": True,
                    "max_length": 2000,
                },
            },
        ],
    }


def home_view(
    user: str,
    statuses: list[PromptStatus],
    environments: tuple[str, ...],
    events: list[AuditEventView],
    soaks: dict[str, list[SoakView]] | None = None,
) -> dict[str, Any]:
    """Every prompt per environment with its running soaks, requests awaiting the viewer,
    the last audit events."""
    blocks: list[Block] = [header("promptship")]
    waiting: list[RequestView] = [
        r
        for s in statuses
        for r in s.open_requests
        if r.requester != user and r.author != user and not any(d.user == user for d in r.decisions)
    ]
    blocks.append(section(f"*Awaiting your decision* ({len(waiting)})"))
    for r in waiting[:10]:
        gates = " ".join(f"{MARK.get(c.state, '•')}{escape(c.gate)}" for c in r.checks)
        blocks.append(
            section(
                f"`{r.code}` *{escape(r.prompt)}* `{escape(r.version)}` → {escape(r.environment)}"
                f" · by {who(r.requester)}\n{gates}"
            )
        )
    blocks.append(divider())
    blocks.append(section(f"*Prompts* ({len(statuses)})"))
    for s in statuses[:40]:
        envs = {d.environment: d for d in s.environments}
        cells = []
        for name in environments:
            d = envs.get(name)
            cells.append(f"{escape(name)} `{escape(d.version)}`" if d else f"{escape(name)} —")
        line = f"*{escape(s.name)}* · " + " · ".join(cells)
        running = (soaks or {}).get(s.name, [])
        for soak in running[:3]:
            worst = "" if soak.worst_divergence is None else f", worst {soak.worst_divergence:.0%}"
            upcoming = f", next at {soak.next_at:%H:%M} UTC" if soak.next_at else ""
            line += (
                f"\n⏳ soak of `{escape(soak.version)}` in {escape(soak.environment)}: "
                f"{soak.cycles_done}/{soak.cycles_total} cycles{upcoming}{worst}"
            )
        gate = next((c.detail for r in s.open_requests for c in r.checks if c.gate == "soak"), None)
        if gate and not running:
            line += f"\n⏳ {escape(gate)}"
        blocks.append(section(line))
    if len(statuses) > 40:
        blocks.append(context(f"… {len(statuses) - 40} more: `/prompt status <name>`"))
    blocks.append(divider())
    blocks.append(section("*Recent activity*"))
    for e in events[:10]:
        what = " ".join(x for x in (e.prompt, e.version, e.environment) if x)
        blocks.append(
            context(f"{e.at:%m-%d %H:%M} {who(e.actor)} {escape(e.action)} {escape(what)}")
        )
    return {"type": "home", "blocks": cap(blocks, VIEW_BLOCKS)}
