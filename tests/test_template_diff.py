"""A template change is visible where people review it: ``promptship diff`` and the
production approval message in Slack show changed few-shot turns and variables, not only
the system prompt."""

from __future__ import annotations

import json
from typing import Any

from bot.blocks.requests import request_message
from promptship.clock import ManualClock
from promptship.services import Promptship
from tests.helpers import REQUESTER, case_results, push, slack

NAME = "customer-support"
SYSTEM = "You are helping {{ customer_name }} on the {{ plan }} plan.\n"
V1: dict[str, Any] = {
    "variables": {"customer_name": None, "plan": "free"},
    "messages": [
        {"role": "user", "content": "Can I export my data?"},
        {"role": "assistant", "content": "Yes: Settings → Export."},
    ],
    "tests": [{"input": "hi", "type": "contains", "expected": "x", "vars": {"customer_name": "A"}}],
}
V2: dict[str, Any] = {
    **V1,
    "variables": {"customer_name": None, "plan": "team", "region": "EU"},
    "messages": [
        {"role": "user", "content": "Can I export my data?"},
        {"role": "assistant", "content": "Yes, {{ customer_name }}: Settings → Export → CSV."},
    ],
}


async def test_diff_shows_changed_turns_and_variables(core: Promptship) -> None:
    await push(core, NAME, "1.0.0", system_prompt=SYSTEM, **V1)
    await push(core, NAME, "1.1.0", system_prompt=SYSTEM, **V2)
    diff = await core.diff(NAME, "1.0.0", "1.1.0")
    lines = diff.system_prompt_diff.splitlines()
    assert "-[assistant] Yes: Settings → Export." in lines
    assert "+[assistant] Yes, {{ customer_name }}: Settings → Export → CSV." in lines
    assert '-plan = "free"' in lines and '+plan = "team"' in lines
    assert '+region = "EU"' in lines
    assert " customer_name (required)" in lines  # unchanged context
    assert not any(line.startswith(("-You", "+You")) for line in lines)  # system unchanged
    assert not diff.identical


async def test_the_approval_message_shows_the_template_change(
    core: Promptship, clock: ManualClock
) -> None:
    await push(core, NAME, "1.0.0", system_prompt=SYSTEM, **V1)
    await core.record_validation_run(NAME, "1.0.0", case_results(10), slack(REQUESTER))
    glass = await core.breakglass(NAME, "1.0.0", slack(REQUESTER), "first release")
    for approver in ("U01", "U02", "U06"):
        await core.approve(glass.id, slack(approver))
    await push(core, NAME, "1.1.0", system_prompt=SYSTEM, **V2)
    await core.record_validation_run(NAME, "1.1.0", case_results(10), slack(REQUESTER))
    await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    request = await core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    assert request.evidence is not None and request.evidence.diff is not None
    blocks = request_message(request, core.policy.roles.approvers).blocks
    text = json.dumps(blocks, ensure_ascii=False)
    assert "+[assistant] Yes, {{ customer_name }}: Settings → Export → CSV." in text
    assert '+region = \\"EU\\"' in text


async def test_a_change_of_a_cases_vars_or_threshold_is_a_change(core: Promptship) -> None:
    await push(core, NAME, "1.0.0", system_prompt=SYSTEM, **V1)
    changed = [{**V1["tests"][0], "vars": {"customer_name": "B"}}]
    await push(core, NAME, "1.0.1", system_prompt=SYSTEM, **{**V1, "tests": changed})
    diff = await core.diff(NAME, "1.0.0", "1.0.1")
    assert not diff.identical
    assert diff.tests_removed == ["contains: 'hi' with vars {\"customer_name\": \"A\"} → 'x'"]
    assert diff.tests_added == ["contains: 'hi' with vars {\"customer_name\": \"B\"} → 'x'"]


async def test_slack_show_lists_the_turns_and_variables(core: Promptship) -> None:
    from bot.blocks.messages import version_message
    from promptship.testing.slack_double import block_problems

    await push(core, NAME, "1.1.0", system_prompt=SYSTEM, **V2)
    blocks = version_message(await core.show(NAME, "1.1.0")).blocks
    assert block_problems(blocks, limit=50) == []
    text = json.dumps(blocks, ensure_ascii=False)
    assert "[assistant] Yes, {{ customer_name }}: Settings → Export → CSV." in text
    assert '`customer_name`, `plan` = \\"team\\", `region` = \\"EU\\"' in text
