"""The approval request carries the evidence approvers weigh — what it replaces, the tests
against their gate, the regressions and who overrode them, the soak in human units, the
system prompt's changed lines, the reason — within Slack's limits (rendered and sent
through the Slack double), on both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.requests import request_message
from promptship.clock import ManualClock
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult
from promptship.services.views import RequestView
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy
from tests.helpers import REQUESTER, case_results, push, slack
from tests.test_soaks import LEASE

NAME = "customer-support"
POLICY = """
environments:
  production: {approvals: 2, soak: 24h, soak_interval: 1h, max_divergence: 0.1}
"""
OLD = "\n".join(f"Rule {i}: answer politely about topic {i}." for i in range(3000))
NEW = "\n".join(f"Rule {i}: answer briefly about topic {i}." for i in range(3000))
SUITE = [{"input": f"question {i}", "expected": "answer", "type": "contains"} for i in range(500)]
REGRESSIONS = [f"question {i}" for i in range(25)]


@pytest.fixture
def core(db: Database, clock: ManualClock) -> Promptship:
    return Promptship(db, make_policy(POLICY), clock)


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble(token="xoxb-test") as slack_double:
        yield slack_double
    assert slack_double.refused == [], "every message must pass Slack's limits"


async def send(double: SlackDouble, message: Any) -> dict[str, Any]:
    """Post the message through the Slack double (which refuses what Slack refuses)."""
    client = AsyncWebClient(token="xoxb-test", base_url=double.api_url)
    await client.chat_postMessage(channel="C0PROMPTOPS", **message.payload())
    return double.calls("chat.postMessage")[-1]


def shown(posted: dict[str, Any]) -> str:
    return json.dumps(posted["blocks"], ensure_ascii=False)


async def in_production_with_a_candidate_soaking(core: Promptship, clock: ManualClock) -> int:
    """1.0.0 in production (break-glass: no soak to wait for); 1.1.0, a 3,000-line rewrite
    with a 500-case suite and overridden regressions, seven cycles into its staging soak."""
    await push(core, version="1.0.0", system_prompt=OLD)
    await core.record_validation_run(NAME, "1.0.0", case_results(10), slack(REQUESTER))
    glass = await core.breakglass(NAME, "1.0.0", slack(REQUESTER), "first release")
    for approver in ("U01", "U02", "U06"):
        await core.approve(glass.id, slack(approver))
    await push(core, version="1.1.0", system_prompt=NEW, tests=SUITE)
    await core.record_validation_run(
        NAME,
        "1.1.0",
        case_results(480, 20),
        slack("U01"),
        regressions=REGRESSIONS,
        regression_override="refund copy changed <!channel>",
    )
    assert (await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))).state == (
        "promoted"
    )
    soak_id = await core.staging_soak_id(NAME, "1.1.0")
    assert soak_id is not None
    for cycle in range(1, 8):
        clock.advance(timedelta(hours=1))
        assert await core.claim_soak_cycle(soak_id, cycle, "r1", LEASE)
        spec = await core.soak_cycle_spec(soak_id, cycle)
        result = CycleResult(sample_size=100, divergent=3 if cycle == 4 else 1, model_calls=100)
        await core.finish_soak_cycle(spec, "r1", result)
    return soak_id


async def test_the_production_request_shows_the_evidence_within_slacks_limits(
    core: Promptship, clock: ManualClock, double: SlackDouble
) -> None:
    await in_production_with_a_candidate_soaking(core, clock)
    request = await core.request_promotion(
        NAME, "1.1.0", "production", slack(REQUESTER), "Q3 tone & brevity <!here>"
    )
    evidence = request.evidence
    assert evidence is not None and evidence.production_version == "1.0.0"
    assert evidence.tests is not None
    assert (evidence.tests.passed, evidence.tests.total, evidence.tests.min_pass_rate) == (
        480,
        500,
        0.8,
    )
    assert (evidence.tests.regression_count, evidence.tests.override_by) == (25, "U01")
    assert evidence.soak is not None
    assert (evidence.soak.cycles_done, evidence.soak.cycles_total) == (7, 24)
    assert evidence.diff is not None and (evidence.diff.added, evidence.diff.removed) == (
        3000,
        3000,
    )

    approvers = core.policy.roles.approvers
    opened = shown(await send(double, request_message(request, approvers)))
    assert "(replaces `1.0.0` in production)" in opened
    assert "*Tests:* ✅ 480/500 passed (96%, gate 80%) · 20 failed, 0 errored" in opened
    assert "*Regressions:* 25 overridden by <@U01>: _refund copy changed &lt;!channel&gt;_" in (
        opened
    )
    assert "question 0; question 1" in opened and "… and 20 more" in opened
    assert "soaking: cycle 7 of 24, worst divergence 3%, ends Jan 02 09:00 UTC" in opened
    assert "*Prompt vs production `1.0.0`:* +3000 −3000 lines" in opened
    assert "-Rule 0: answer politely about topic 0." in opened
    assert "+Rule 0: answer briefly about topic 0." in opened
    assert "full diff: `/prompt diff customer-support 1.0.0 1.1.0`" in opened
    assert "*Reason:* Q3 tone &amp; brevity &lt;!here&gt;" in opened
    assert "0.0/" not in opened and " h," not in opened  # never fractions of hours
    # the approvers are pinged once, when it opens: users and the user group
    assert "Approvers: <@U01> <@U02> <@U06> <!subteam^S0GROUP>" in opened
    labels = [
        e["text"]["text"]
        for b in json.loads(opened)
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert labels == ["Approve", "Reject"]

    outcome = await core.approve(request.id, slack("U02"), "fine")
    updated = shown(await send(double, request_message(outcome.request)))
    assert "Approvers:" not in updated and "<@U01>" in updated  # the override, not a ping
    assert "Approvals 1/2: <@U02>" in updated


async def test_the_opening_post_pings_the_approvers_and_its_updates_do_not(
    core: Promptship, clock: ManualClock
) -> None:
    await in_production_with_a_candidate_soaking(core, clock)
    request = await core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    await core.approve(request.id, slack("U01"))
    due = await core.due_notifications("C0PROMPTOPS", limit=200)
    ours = [d for d in due if d.payload.get("request", {}).get("id") == request.id]
    assert [d.topic for d in ours][:1] == ["request.created"] and len(ours) > 1
    assert ours[0].payload["mention"] == ["U01", "U02", "U06", "S0GROUP"]
    assert all("mention" not in d.payload for d in ours[1:])


async def test_a_request_that_needs_no_approvals_has_no_approve_buttons(
    core: Promptship, double: SlackDouble
) -> None:
    await push(core, version="1.0.0", tests=SUITE)
    request = await core.request_promotion(
        NAME, "1.0.0", "staging", slack(REQUESTER), queue_tests=True
    )
    assert request.state == "open" and request.required_approvals == 0
    posted = await send(double, request_message(request, core.policy.roles.approvers))
    assert not any(b["type"] == "actions" for b in posted["blocks"])
    assert "Approvers:" not in shown(posted) and "Approvals" not in shown(posted)
    assert "tests queued (500 cases)" in shown(posted)


def test_a_closed_request_shows_its_evidence_and_no_buttons() -> None:
    from tests.test_blocks import request as huge_request

    view = huge_request(state="promoted")
    data = view.model_dump()
    data["evidence"] = {
        "as_of": view.created_at,
        "production_version": "0.9.0",
        "tests": {
            "state": "passed", "passed": 500, "total": 500, "failed": 0, "errored": 0,
            "pass_rate": 1.0, "min_pass_rate": 0.8, "regressions": [], "regression_count": 0,
        },
        "soak": {
            "state": "passed", "cycles_done": 24, "cycles_total": 24, "worst_divergence": 0.04,
            "max_divergence": 0.1, "started_at": view.created_at, "ends_at": view.created_at,
            "failure": None,
        },
        "diff": None,
    }  # fmt: skip
    message = request_message(RequestView.model_validate(data))
    body = json.dumps(message.blocks, ensure_ascii=False)
    assert "*Regressions:* none" in body
    assert "*Soak:* ✅ 24 of 24 cycles in limits (worst divergence 4%, limit 10%)" in body
    assert not any(b["type"] == "actions" for b in message.blocks)
