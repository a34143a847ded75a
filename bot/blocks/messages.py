"""Messages: results, notices, help. The promotion request is in ``requests``; it and the
shared pieces are re-exported here for the callers that know them by this module."""

from __future__ import annotations

import json
from typing import Any

from bot.blocks.common import MARK as MARK
from bot.blocks.common import Message as Message
from bot.blocks.common import unverified, who
from bot.blocks.limits import (
    SECTION_TEXT,
    Block,
    cap,
    code,
    context,
    escape,
    header,
    section,
)
from bot.blocks.links import ConsoleLinks, link
from bot.blocks.requests import CLOSED as CLOSED
from bot.blocks.requests import request_message as request_message
from bot.grammar import USAGE
from promptship.domain.lifecycle import soak_next_steps
from promptship.services.views import (
    DecisionOutcome,
    DeploymentMove,
    HistoryPage,
    PromptStatus,
    RequestView,
    RollbackResult,
    RunView,
    SoakView,
    VersionDetail,
    VersionDiff,
)


def decision_reply(outcome: DecisionOutcome) -> Message:
    return Message(outcome.message, [section(escape(outcome.message))])


def override_reply(r: RequestView) -> Message:
    """The approver who overrode a request's regressions sees where it stands now."""
    now = "it is promoted" if r.state == "promoted" else f"it is {r.state}"
    text = f"You overrode the regressions of {r.code} ({r.prompt} {r.version}): {now}."
    return Message(text, [section(escape(text))])


def rerun_reply(r: RequestView) -> Message:
    cases = r.evidence.tests.total if r.evidence and r.evidence.tests else 0
    text = (
        f"Re-running the {cases} test case(s) of {r.prompt} {r.version}: {r.code} waits for "
        "the new run and is judged on it."
    )
    return Message(text, [section(escape(text))])


def rollback_message(result: RollbackResult) -> Message:
    text = (
        f"⏪ {result.prompt} {result.environment} rolled back: "
        f"{result.from_version} → {result.to_version} by {result.actor}{unverified(result.via)}"
    )
    lines = [
        f"⏪ *{escape(result.prompt)}* in *{escape(result.environment)}*: "
        f"`{escape(result.from_version)}` → `{escape(result.to_version)}`",
        f"by {who(result.actor)}{unverified(result.via)} at {result.at:%H:%M:%S} UTC",
    ]
    if result.reason:
        lines.append(f"*Reason:* {escape(result.reason)}")
    return Message(text, [section("\n".join(lines))])


def move_message(move: DeploymentMove) -> Message:
    """Dev pointed at a version at once (no gates), or already running it."""
    if not move.changed:
        text = f"{move.prompt} {move.environment} already runs {move.to_version}"
        return Message(
            text,
            [
                section(
                    f"*{escape(move.prompt)}* in *{escape(move.environment)}* "
                    f"already runs `{escape(move.to_version)}`"
                )
            ],
        )
    was = f"`{escape(move.from_version)}` → " if move.from_version else ""
    text = f"{move.prompt} {move.environment} → {move.to_version} by {move.actor}"
    return Message(
        text,
        [
            section(
                f"▶️ *{escape(move.prompt)}* in *{escape(move.environment)}*: "
                f"{was}`{escape(move.to_version)}`\nby {who(move.actor)}{unverified(move.via)} "
                f"at {move.at:%H:%M:%S} UTC"
            )
        ],
    )


def run_message(
    prompt: str,
    version: str,
    run: RunView,
    failures: list[dict[str, Any]],
    console: ConsoleLinks | None = None,
) -> Message:
    """A validation result: pass rate, counts, duration and the first failures; with
    ``console``, a link to the version's page with every failed case."""
    rate = "n/a" if run.pass_rate is None else f"{run.pass_rate:.0%}"
    icon = "✅" if run.state == "passed" else "❌"
    duration = ""
    if run.finished_at:
        duration = f" in {(run.finished_at - run.started_at).total_seconds():.0f}s"
    head = (
        f"{icon} Tests of *{escape(prompt)}* `{escape(version)}`: {rate} pass rate — "
        f"{run.passed} passed, {run.failed} failed, {run.errored} errored{duration}"
    )
    blocks: list[Block] = [section(head)]
    if run.error:
        blocks.append(section(f"*Run failed:* {escape(run.error)}"))
    if run.notes:
        blocks.append(context("; ".join(f"note: {escape(n)}" for n in run.notes[:5])))
    for f in failures[:10]:
        kind = "errored" if f.get("errored") else str(f.get("type"))
        blocks.append(
            section(
                f"*{escape(kind)}* · _{escape(str(f.get('input', '')))}_\n"
                f"expected: {escape(str(f.get('expected', '')))}\n"
                f"got: {escape(str(f.get('got') or '—'))}\n{escape(str(f.get('why') or ''))}",
                where=f"/prompt show {prompt} {version}",
            )
        )
    notes = []
    if run.failed + run.errored > len(failures[:10]):
        notes.append(f"all results: `promptship test {escape(prompt)} {escape(version)}`")
    if console is not None:
        notes.append(link(console.version(prompt, version, show="problems"), "Full report"))
    if notes:
        blocks.append(context(" · ".join(notes)))
    if run.regressions:
        blocks.append(
            section(
                f"*{len(run.regressions)} regression(s)* against production: "
                + "; ".join(escape(x) for x in run.regressions[:5])
            )
        )
    text = f"Tests of {prompt} {version}: {rate} ({run.passed}/{run.total} passed, {run.errored} errored)"
    return Message(text, cap(blocks))


def status_message(statuses: list[PromptStatus], environments: tuple[str, ...]) -> Message:
    if not statuses:
        return Message(
            "No prompts yet.", [section("No prompts yet: `promptship push FILE` registers one.")]
        )
    blocks: list[Block] = []
    for s in statuses[:40]:
        envs = {d.environment: d.version for d in s.environments}
        cells = " · ".join(
            f"{escape(e)} `{escape(envs[e])}`" if e in envs else f"{escape(e)} —"
            for e in environments
        )
        pending = f"  ({len(s.open_requests)} open request(s))" if s.open_requests else ""
        blocks.append(
            section(
                f"*{escape(s.name)}* latest `{escape(s.latest_version or '—')}`\n{cells}{pending}"
            )
        )
    if len(statuses) > 40:
        blocks.append(context(f"… {len(statuses) - 40} more: `/prompt status <name>`"))
    return Message(f"{len(statuses)} prompt(s)", cap(blocks))


def version_message(d: VersionDetail) -> Message:
    where = f"promptship show {d.name} {d.version}"
    blocks: list[Block] = [
        header(f"{d.name} {d.version}"),
        section(
            f"status *{escape(d.status)}* · model `{escape(d.model)}` ({escape(d.provider)}) · "
            f"temperature {d.temperature} · max_tokens {d.max_tokens}\nby {who(d.author)} · "
            f"`{d.content_hash[:12]}`"
            + (
                f"\nactive in: {', '.join(escape(e) for e in d.environments)}"
                if d.environments
                else ""
            )
        ),
        code(d.system_prompt, where),
    ]
    if d.messages:
        turns = "\n".join(f"[{m['role']}] {m['content']}" for m in d.messages)
        blocks.append(context(f"{len(d.messages)} few-shot turn(s), sent before the user's:"))
        blocks.append(code(turns, where))
    if d.variables:
        shown = ", ".join(
            f"`{escape(name)}`" + ("" if default is None else f" = {escape(json.dumps(default))}")
            for name, default in sorted(d.variables.items())  # JSONB keeps no key order
        )
        blocks.append(context(f"variables: {shown} (no default: the app must pass it)"))
    blocks.append(context(f"{len(d.tests)} test case(s)"))
    return Message(f"{d.name} {d.version} ({d.status})", cap(blocks))


def diff_message(d: VersionDiff) -> Message:
    where = f"promptship diff {d.name} {d.old_version} {d.new_version}"
    blocks: list[Block] = [
        section(f"*{escape(d.name)}* `{escape(d.old_version)}` → `{escape(d.new_version)}`")
    ]
    if d.identical:
        blocks.append(section("Same content."))
    for change in d.settings[:10]:
        blocks.append(
            section(
                f"*{escape(change.key)}*: `{escape(str(change.old))}` → `{escape(str(change.new))}`"
            )
        )
    if d.system_prompt_diff:
        blocks.append(code(d.system_prompt_diff, where))
    if d.tests_added or d.tests_removed:
        blocks.append(context(f"tests: +{len(d.tests_added)} −{len(d.tests_removed)}"))
    return Message(f"diff {d.name} {d.old_version} {d.new_version}", cap(blocks))


def help_message() -> Message:
    lines = [f"`{escape(form)}`\n    e.g. `{escape(example)}`" for form, example in USAGE.values()]
    return Message(
        "promptship /prompt commands", [section("*/prompt* commands:"), section("\n".join(lines))]
    )


def error_message(message: str, hint: str | None = None) -> Message:
    text = f"⚠️ {escape(message)}"
    if hint:
        text += f"\n{escape(hint)}"
    return Message(message, [section(text)])


def history_message(page: HistoryPage) -> Message:
    where = f"promptship history {page.prompt}"
    lines = []
    for e in page.events:
        what = " ".join(x for x in (e.version, e.environment) if x)
        lines.append(
            f"`{e.seq}` {e.at:%Y-%m-%d %H:%M} {who(e.actor)} *{escape(e.action)}* {escape(what)}"
        )
    body = "\n".join(lines) or "No events yet."
    blocks: list[Block] = [
        section(f"*History of {escape(page.prompt)}*"),
        section(body, where=where),
    ]
    if page.next_before:
        blocks.append(context(f"older events: `{where} --before {page.next_before}`"))
    return Message(f"History of {page.prompt}", blocks)


def soak_message(soaks: list[SoakView], console: ConsoleLinks | None = None) -> Message:
    """The soaks of a prompt; with ``console``, each links to its chart (while they fit)."""
    if not soaks:
        return Message(
            "No soaks yet.", [section("No soaks yet: a soak starts when a version enters staging.")]
        )
    lines = []
    for s in soaks:
        worst = "" if s.worst_divergence is None else f", worst divergence {s.worst_divergence:.0%}"
        failure = f" — {escape(s.failure)}" if s.failure else ""
        upcoming = f", next cycle at {s.next_at:%H:%M:%S} UTC" if s.next_at else ""
        lines.append(
            f"`{escape(s.version)}` {escape(s.kind)} in {escape(s.environment)}: *{escape(s.state)}*, "
            f"{s.cycles_done}/{s.cycles_total} cycle(s){worst}{upcoming}, "
            f"ends {s.ends_at:%Y-%m-%d %H:%M} UTC{failure}"
        )
    if console is not None:
        lines = _with_charts(lines, soaks, console)
    return Message(f"{len(soaks)} soak(s)", [section("\n".join(lines))])


def _with_charts(lines: list[str], soaks: list[SoakView], console: ConsoleLinks) -> list[str]:
    """Each line with its soak's chart link, for the lines the section shows whole: a link
    cut in half by the section's limit would show as raw text."""
    used, linked = 0, []
    for line, s in zip(lines, soaks, strict=True):
        chart = f" · {link(console.soak(s.id), 'Soak chart')}"
        if used + len(line) + len(chart) < SECTION_TEXT:  # room left for the cut's "…"
            line += chart
        used += len(line) + 1
        linked.append(line)
    return linked


def soak_restarted_message(
    prompt: str, soak: SoakView, actor: str, console: ConsoleLinks | None = None
) -> Message:
    """An approver restarted a staging soak: the channel sees the fresh one start."""
    text = f"🔁 {actor} restarted the staging soak of {prompt} {soak.version}"
    body = (
        f"🔁 {who(actor)} restarted the staging soak of *{escape(prompt)}* "
        f"`{escape(soak.version)}`: {soak.cycles_total} cycle(s), ends "
        f"{soak.ends_at:%Y-%m-%d %H:%M} UTC. Follow it with `/prompt soak {escape(prompt)}`."
    )
    if console is not None:
        body += f" {link(console.soak(soak.id), 'Soak chart')}"
    return Message(text, [section(body)])


def soak_result_message(payload: dict[str, Any], console: ConsoleLinks | None = None) -> Message:
    """A soak passed, failed (with the worst examples) or reverted a break-glass version;
    with ``console`` and the soak's id (alerts queued before it was sent have none), a link
    to its chart."""
    prompt, version = str(payload["prompt"]), str(payload["version"])
    chart = _chart(payload, console)
    breakglass = payload.get("kind") == "breakglass-production"
    failure = payload.get("failure")
    where = "production (break-glass)" if breakglass else "staging"
    if not failure:
        text = f"✅ Soak of {prompt} {version} in {where} passed"
        return Message(
            text,
            [
                section(
                    f"✅ Soak of *{escape(prompt)}* `{escape(version)}` "
                    f"in {where} passed: every cycle within limits{chart}"
                )
            ],
        )
    oncall = " ".join(
        f"<!subteam^{escape(u)}>" if u.startswith("S") else who(u)
        for u in payload.get("oncall", [])
    )
    why, _, advice = str(failure).partition(" Next: ")
    insufficient = why.startswith("not enough traffic")
    if not breakglass:
        action = "production is blocked for this version"
    elif insufficient:  # too little traffic reverts nothing: the version stays, unverified
        action = "the version stays in production, not yet checked against real traffic"
    elif payload.get("not_reverted"):  # the why is in the failure; on-call rolls back by hand
        action = "it still serves production: the automatic revert did not happen"
    else:
        action = "reverted to the previous version automatically"
    if not advice:  # an alert queued before failures carried the way on
        advice = soak_next_steps(
            prompt, version, insufficient=insufficient, breakglass=breakglass
        ).removeprefix("Next: ")
    text = f"🚨 Soak of {prompt} {version} in {where} failed: {why}"
    head = (
        f"🚨 Soak of *{escape(prompt)}* `{escape(version)}` in {where} failed — {action}.\n"
        f"{escape(why)}"
    )
    if advice:
        head += f"\n*Next:* {escape(advice)}"
    if breakglass and oncall:
        head += f"\n{oncall}"
    blocks: list[Block] = [section(head, where="the soak result")]
    if chart:
        blocks.append(context(chart.strip()))
    for example in payload.get("worst", [])[:3]:
        blocks.append(
            section(
                f"*similarity {float(example.get('similarity', 0)):.2f}* — "
                f"input: {escape(str(example.get('input', ''))[:600])}\n"
                f">new: {escape(str(example.get('candidate', ''))[:900])}\n"
                f">before: {escape(str(example.get('baseline', ''))[:900])}",
                where="the soak example",
            )
        )
    return Message(text, cap(blocks))


def _chart(payload: dict[str, Any], console: ConsoleLinks | None) -> str:
    """`` · <…/soaks/7|Soak chart>`` for a soak alert, or "" without a console or an id."""
    soak_id = payload.get("soak_id")
    if console is None or not isinstance(soak_id, int) or isinstance(soak_id, bool):
        return ""
    return f" · {link(console.soak(soak_id), 'Soak chart')}"


def drift_message(payload: dict[str, Any], console: ConsoleLinks | None = None) -> Message:
    """The nightly re-run of a production suite fell under the gate; with ``console``, a
    link to the version's page with every failed case."""
    run = RunView.model_validate(payload["run"])
    prompt, version = str(payload["prompt"]), str(payload["version"])
    rate = "n/a" if run.pass_rate is None else f"{run.pass_rate:.0%}"
    minimum = float(payload.get("min_pass_rate", 0.8))
    text = f"📉 Drift: {prompt} {version} in production now passes {rate} of its suite"
    head = (
        f"📉 *Drift:* *{escape(prompt)}* `{escape(version)}` in production now passes {rate} "
        f"of its suite (gate {minimum:.0%}): {run.passed} passed, {run.failed} failed, "
        f"{run.errored} errored. The provider may have changed the model behind its name."
    )
    blocks: list[Block] = [section(head)]
    for f in payload.get("failures", [])[:5]:
        blocks.append(
            section(
                f"• {escape(str(f.get('input', ''))[:400])} → "
                f"{escape(str(f.get('got') or f.get('error') or '')[:400])}"
            )
        )
    if console is not None:
        blocks.append(
            context(link(console.version(prompt, version, show="problems"), "Full report"))
        )
    return Message(text, cap(blocks))
