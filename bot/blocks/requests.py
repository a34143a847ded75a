"""The promotion request message: the evidence approvers weigh, the gate checklist, and the
buttons its state calls for. Updated in place as decisions arrive."""

from __future__ import annotations

from collections.abc import Sequence

from bot.blocks.common import MARK, Message, confirm, ping, unverified, who
from bot.blocks.limits import (
    BUTTON_TEXT,
    BUTTON_VALUE,
    SECTION_TEXT,
    Block,
    cap,
    context,
    escape,
    header,
    plain,
    section,
    truncate,
    unfenced,
)
from bot.blocks.links import ConsoleLinks, link
from bot.ids import ActionId, BlockId
from bot.state import RequestRef
from promptship.domain.lifecycle import clock_time
from promptship.services.views import (
    DiffEvidence,
    RequestView,
    SoakEvidence,
    TestsEvidence,
)

CLOSED = {
    "promoted": "✅ Promoted",
    "rejected": "❌ Rejected",
    "cancelled": "🚫 Cancelled",
    "expired": "⌛ Expired",
    "superseded": "↪️ Superseded",
    "failed": "❌ Failed",
}
#: regressions named on the message; the rest are counted
REGRESSIONS_SHOWN = 5


def _target(r: RequestView) -> str:
    replaces = ""
    if r.evidence and r.evidence.production_version and r.evidence.production_version != r.version:
        replaces = f" (replaces `{escape(r.evidence.production_version)}` in production)"
    return f"*{escape(r.prompt)}* `{escape(r.version)}` → *{escape(r.environment)}*{replaces}"


def tests_line(t: TestsEvidence) -> str:
    """``Tests: ✅ 480/500 passed (96%, gate 80%)`` and what failed."""
    rate = "n/a" if t.pass_rate is None else f"{t.pass_rate:.0%}"
    if t.state in ("queued", "running"):
        return f"*Tests:* ⏳ {t.state} ({t.total} cases)"
    mark = MARK["passed"] if t.state == "passed" else MARK["failed"]
    line = f"*Tests:* {mark} {t.passed}/{t.total} passed ({rate}, gate {t.min_pass_rate:.0%})"
    if t.failed or t.errored:
        line += f" · {t.failed} failed, {t.errored} errored"
    return line


def runs_line(t: TestsEvidence) -> str | None:
    """``Runs: run 2 of at most 4`` once a request's tests were run again; None before."""
    if not (t.run_number and t.max_runs and t.run_number > 1):
        return None
    return f"*Runs:* run {t.run_number} of at most {t.max_runs} (the first and re-runs)"


def regressions_line(t: TestsEvidence) -> str:
    """``Regressions: none``, or the cases and who overrode them with what reason."""
    if not t.regression_count:
        return "*Regressions:* none"
    names = "; ".join(escape(x) for x in t.regressions[:REGRESSIONS_SHOWN])
    more = t.regression_count - min(len(t.regressions), REGRESSIONS_SHOWN)
    if more > 0:
        names += f" … and {more} more"
    if t.override_reason:
        by = f" by {who(t.override_by)}" if t.override_by else ""
        return (
            f"*Regressions:* {t.regression_count} overridden{by}: _{escape(t.override_reason)}_"
            f"\n    {names}"
        )
    return f"*Regressions:* {MARK['failed']} {t.regression_count}, not overridden: {names}"


def soak_line(s: SoakEvidence, r: RequestView) -> str:
    """The staging soak in human units, never in fractions of hours."""
    worst = "" if s.worst_divergence is None else f"worst divergence {s.worst_divergence:.0%}, "
    limit = f"limit {s.max_divergence:.0%}"
    if s.state == "running":
        now = r.evidence.as_of if r.evidence else r.created_at
        cycle = (
            f"cycle {s.cycles_done} of {s.cycles_total}"
            if s.cycles_done
            else f"no cycle done yet of {s.cycles_total}"
        )
        return f"*Soak:* ⏳ soaking: {cycle}, {worst}{limit}, ends {clock_time(s.ends_at, now)}"
    if s.state == "passed":
        return f"*Soak:* ✅ {s.cycles_done} of {s.cycles_total} cycles in limits ({worst}{limit})"
    why = f": {escape(s.failure)}" if s.failure else ""
    return f"*Soak:* ❌ {escape(s.state)} after {s.cycles_done} of {s.cycles_total} cycles{why}"


def diff_blocks(
    r: RequestView, d: DiffEvidence, console: ConsoleLinks | None = None
) -> list[Block]:
    """The system prompt's changed lines against production, and how to see the rest (with
    ``console``, also a link to the full side-by-side diff)."""
    args = escape(f"{r.prompt} {d.against} {r.version}")
    full = ""
    if console is not None:
        full = " · " + link(console.diff(r.prompt, d.against, r.version), "Full diff")
    if not d.added and not d.removed:
        return [section(f"*System prompt:* same as production `{escape(d.against)}`", BlockId.DIFF)]
    head = f"*Prompt vs production `{escape(d.against)}`:* +{d.added} −{d.removed} lines"
    if d.too_large:
        return [
            section(
                f"*Prompt vs production `{escape(d.against)}`:* a change of up to "
                f"+{d.added} −{d.removed} lines, too large to show here: "
                f"`/prompt diff {args}` or `promptship diff {args}`{full}",
                BlockId.DIFF,
            )
        ]
    body = unfenced(escape("\n".join(d.lines)))  # a line holding ``` stays inside the block
    room = SECTION_TEXT - len(head) - 8
    fenced = f"{head}\n```{truncate(body, room)}```"
    shown = "" if d.shown_all else " (only the first changed lines are shown)"
    note = f"full diff: `/prompt diff {args}` or `promptship diff {args}`{shown}{full}"
    return [section(fenced, BlockId.DIFF), context(note, block_id=BlockId.DIFF_NOTE)]


def evidence_blocks(r: RequestView, console: ConsoleLinks | None = None) -> list[Block]:
    """Tests, regressions and soak (those the checklist does not already show), then the diff."""
    e = r.evidence
    if e is None:
        return []
    gates = {c.gate for c in r.checks}
    lines = []
    if e.tests is not None:
        if "tests" not in gates:
            lines.append(tests_line(e.tests))
        if "regressions" not in gates:
            lines.append(regressions_line(e.tests))
        if (runs := runs_line(e.tests)) is not None:
            lines.append(runs)
    elif e.into_production and "tests" not in gates:
        lines.append("*Tests:* no test run")
    if e.soak is not None and "soak" not in gates:
        lines.append(soak_line(e.soak, r))
    blocks = [section("\n".join(lines), BlockId.EVIDENCE)] if lines else []
    if e.diff is not None:
        blocks.extend(diff_blocks(r, e.diff, console))
    return blocks


def _blocked(r: RequestView) -> bool:
    """Open, and held only by regressions nobody has accepted yet."""
    return r.state == "open" and any(
        c.gate == "regressions" and c.state == "failed" for c in r.checks
    )


def _decision_buttons(r: RequestView, value: str) -> Block:
    label = f"{r.prompt} {r.version} → {r.environment}"
    return {
        "type": "actions",
        "block_id": BlockId.DECISION,
        "elements": [
            {
                "type": "button",
                "action_id": ActionId.APPROVE,
                "text": plain("Approve", BUTTON_TEXT),
                "style": "primary",
                "value": value,
                "confirm": confirm(
                    "Approve this promotion?",
                    f"Approve *{escape(label)}*? Your name is recorded in the audit log.",
                    "Approve",
                    "primary",
                ),
            },
            {
                "type": "button",
                "action_id": ActionId.REJECT,
                "text": plain("Reject", BUTTON_TEXT),
                "style": "danger",
                "value": value,
                "confirm": confirm(
                    "Reject this promotion?",
                    f"Reject *{escape(label)}*? You will be asked for a reason; this closes the request.",
                    "Reject",
                    "danger",
                ),
            },
        ],
    }


def _blocked_buttons(r: RequestView, value: str) -> list[Block]:
    cases = r.evidence.tests.total if r.evidence and r.evidence.tests else 0
    return [
        {
            "type": "actions",
            "block_id": BlockId.BLOCKED,
            "elements": [
                {
                    "type": "button",
                    "action_id": ActionId.OVERRIDE,
                    "text": plain("Override with reason", BUTTON_TEXT),
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": ActionId.RERUN,
                    "text": plain("Re-run tests", BUTTON_TEXT),
                    "value": value,
                    "confirm": confirm(
                        "Re-run the tests?",
                        f"Run the {cases} case(s) of *{escape(r.prompt)}* `{escape(r.version)}` "
                        "again? The request waits for the new run.",
                        "Re-run",
                    ),
                },
            ],
        },
        context(
            "Blocked by regressions. *Override with reason*: approvers only. "
            "*Re-run tests*: the requester or an approver.",
            block_id=BlockId.BLOCKED_NOTE,
        ),
    ]


def request_message(
    r: RequestView, mention: Sequence[str] = (), console: ConsoleLinks | None = None
) -> Message:
    """The request with its evidence; ``mention`` (the approvers) only when it opens, so its
    updates ping nobody. Approve and Reject only while it is open and needs approvals. With
    ``console``, the diff links to the console's full diff."""
    breakglass = r.kind == "breakglass"
    title = f"{'🚨 BREAK-GLASS' if breakglass else 'Promotion'} request {r.code}"
    lines = [_target(r), f"requested by {who(r.requester)} · written by {who(r.author)}"]
    if breakglass:
        lines.insert(
            0,
            f"🚨 *Emergency promotion straight to production.* It needs "
            f"*{r.required_approvals} approvals* and a production soak follows.",
        )
    blocks: list[Block] = [header(title), section("\n".join(lines), BlockId.SUMMARY)]
    if mention and r.state == "open" and r.required_approvals:
        pings = " ".join(ping(m) for m in mention[:20])
        blocks.append(context(f"Approvers: {pings}", block_id=BlockId.APPROVERS))
    if r.reason:
        blocks.append(section(f"*Reason:* {escape(r.reason)}", BlockId.REASON, "/prompt history"))
    blocks.extend(evidence_blocks(r, console))
    if r.checks:
        checklist = "\n".join(
            f"{MARK.get(c.state, '•')} *{escape(c.gate)}*: {escape(c.detail)}" for c in r.checks
        )
        blocks.append(section(checklist, BlockId.CHECKLIST))
    approvers = [who(d.user) + unverified(d.via) for d in r.decisions if d.approve]
    have = min(len(approvers), r.required_approvals) if r.required_approvals else len(approvers)
    status = []
    if r.required_approvals or approvers:
        status.append(f"Approvals {have}/{r.required_approvals}")
        if approvers:
            status[0] += ": " + ", ".join(approvers)
    run = r.evidence.tests.run_id if r.evidence and r.evidence.tests else None
    value = RequestRef(r=r.id, h=r.content_hash[:12], u=run).model_dump_json()[:BUTTON_VALUE]
    if r.state == "open":
        expires = f"expires {r.expires_at:%Y-%m-%d %H:%M} UTC"
        blocks.append(context(*status, expires, block_id=BlockId.CONTEXT))
        if _blocked(r):
            blocks.extend(_blocked_buttons(r, value))
        if r.required_approvals:
            blocks.append(_decision_buttons(r, value))
    else:
        closed = CLOSED.get(r.state, r.state)
        closer = next((d.via for d in r.decisions if d.user == r.closed_by), None)
        by = f" by {who(r.closed_by)}{unverified(closer)}" if r.closed_by else ""
        why = f": {escape(r.close_reason)}" if r.close_reason else ""
        blocks.append(section(f"*{closed}*{by}{why}", BlockId.CONTEXT))
        if status:
            blocks.append(context(*status))
    text = f"{title}: {r.prompt} {r.version} → {r.environment} ({r.state})"
    return Message(text, cap(blocks))
