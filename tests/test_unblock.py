"""A request held back by regressions stays open and shows "Override with reason" and
"Re-run tests": an approver overrides (with a reason) and it promotes; the requester or an
approver re-runs the tests and it waits for them; everyone else is refused — through the
services and the API on both stores, and by button and modal in Slack."""

from __future__ import annotations

import json

import pytest

from bot.blocks.requests import request_message
from promptship.domain.identity import Scope
from promptship.domain.promptfile import parse_prompt
from promptship.errors import BadInput, Conflict, Forbidden, GateRefused
from promptship.services import Promptship
from promptship.services.views import RequestView
from tests.conftest import prompt_yaml
from tests.helpers import REQUESTER, case_results, push, service, slack, to_production
from tests.slack_helpers import wait_for
from tests.test_api_identity import CI, Served, bearer, cli
from tests.test_api_identity import api as api
from tests.test_slack_app import Bot, texts
from tests.test_slack_app import bot as bot

NAME = "customer-support"


async def finish_queued(core: Promptship, regressions: list[str] | None = None) -> None:
    """A worker takes the queued run and reports 10/10 passed (and these regressions)."""
    run_id = await core.claim_validation_run("worker")
    assert run_id is not None
    await core.finish_validation_run(
        run_id, case_results(10), regressions=regressions, owner="worker"
    )


async def blocked_request(core: Promptship) -> RequestView:
    """1.0.0 in production; 1.1.0 asked for staging while its tests run, which then finish
    with a case that passes in production and fails here."""
    await push(core, version="1.0.0")
    await to_production(core)
    await push(core, version="1.1.0", system_prompt="v1.1")
    run = await core.start_validation_run(NAME, "1.1.0", slack(REQUESTER), 10, owner="ci")
    request = await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    assert request.state == "open"
    await core.finish_validation_run(
        run.id, case_results(10), regressions=["refund policy"], owner="ci"
    )
    return await core.request(request.id)


def buttons(view: RequestView) -> list[str]:
    return [
        e["text"]["text"]
        for b in request_message(view).blocks
        if b["type"] == "actions"
        for e in b["elements"]
    ]


async def test_a_request_held_by_regressions_stays_open_with_override_and_rerun(
    core: Promptship,
) -> None:
    request = await blocked_request(core)
    assert request.state == "open"
    [gate] = [c for c in request.checks if c.gate == "regressions"]
    assert gate.state == "failed" and "refund policy" in gate.detail
    assert buttons(request) == ["Override with reason", "Re-run tests"]  # staging: no approvals


async def test_only_an_approver_overrides_and_the_request_then_promotes(core: Promptship) -> None:
    request = await blocked_request(core)
    for outsider, refusal in (
        (slack(REQUESTER), "only approvers can override the regressions of req-"),
        (slack("U08"), "only approvers"),
        (service("ci"), "is a service"),
    ):
        with pytest.raises(Forbidden, match=refusal):
            await core.override_request(request.id, outsider, "looks fine")
    with pytest.raises(BadInput, match="needs a reason"):
        await core.override_request(request.id, slack("U01"), "  ")
    assert (await core.request(request.id)).state == "open"

    done = await core.override_request(request.id, slack("U01"), "the refund copy changed")
    assert done.state == "promoted" and buttons(done) == []
    assert done.evidence and done.evidence.tests
    assert (done.evidence.tests.override_by, done.evidence.tests.override_reason) == (
        "U01",
        "the refund copy changed",
    )
    [event] = [
        e for e in (await core.history(NAME)).events
        if e.action == "validation.regressions_overridden"
    ]  # fmt: skip
    assert (event.actor, event.details["auth"]) == ("U01", "slack")


async def test_the_requester_or_an_approver_reruns_the_tests_and_the_request_waits(
    core: Promptship,
) -> None:
    request = await blocked_request(core)
    with pytest.raises(Forbidden, match="only the requester or an approver can re-run"):
        await core.rerun_request_tests(request.id, slack("U08"))
    waiting = await core.rerun_request_tests(request.id, slack(REQUESTER))
    [tests] = [c for c in waiting.checks if c.gate == "tests"]
    assert (waiting.state, tests.state, tests.detail) == (
        "open",
        "waiting",
        "tests queued (2 cases)",
    )
    assert buttons(waiting) == []  # nothing to override while the run is under way
    await finish_queued(core)  # the flaky case passes this time
    assert (await core.request(request.id)).state == "promoted"


async def test_an_approver_reruns_too_but_not_a_request_that_waits_on_no_tests(
    core: Promptship,
) -> None:
    request = await blocked_request(core)
    assert (await core.rerun_request_tests(request.id, slack("U02"))).state == "open"
    await finish_queued(core)
    production = await core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    with pytest.raises(BadInput, match="does not wait on tests"):
        await core.rerun_request_tests(production.id, slack(REQUESTER))


async def test_a_request_runs_its_tests_again_three_times_at_most_and_says_which_run(
    core: Promptship,
) -> None:
    request = await blocked_request(core)
    assert request.evidence and request.evidence.tests
    assert "run 1" not in json.dumps(request_message(request).blocks)  # no re-run yet
    for rerun, by in ((1, slack(REQUESTER)), (2, slack("U02")), (3, slack(REQUESTER))):
        queued = await core.rerun_request_tests(request.id, by)
        assert queued.evidence and queued.evidence.tests
        assert (queued.evidence.tests.run_number, queued.evidence.tests.max_runs) == (rerun + 1, 4)
        assert f"run {rerun + 1} of at most 4" in json.dumps(request_message(queued).blocks)
        await finish_queued(core, regressions=["refund policy"])
    with pytest.raises(GateRefused) as refused:
        await core.rerun_request_tests(request.id, slack(REQUESTER))
    assert "were run 4 times, the most a request allows" in refused.value.message
    assert "push a fixed version" in (refused.value.hint or "")
    held = await core.request(request.id)
    assert held.state == "open" and held.evidence and held.evidence.tests
    assert held.evidence.tests.state == "passed" and held.evidence.tests.run_number == 4
    assert await core.claim_validation_run("worker") is None  # nothing more was queued


async def test_an_override_binds_to_the_run_the_approver_saw_never_a_later_one(
    core: Promptship,
) -> None:
    request = await blocked_request(core)
    assert request.evidence and request.evidence.tests
    seen = request.evidence.tests.run_id
    values = [
        json.loads(e["value"])
        for b in request_message(request).blocks
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert seen is not None and values and all(v["u"] == seen for v in values)
    await core.rerun_request_tests(request.id, slack(REQUESTER))
    await finish_queued(core, regressions=["refund policy", "never promise refunds"])
    with pytest.raises(
        Conflict, match=f"ran again since the message you answered \\(run {seen}\\)"
    ):
        await core.override_request(request.id, slack("U01"), "flaky", run_id=seen)
    with pytest.raises(BadInput, match="say which run's regressions you accept"):
        await core.override_request(request.id, slack("U01"), "flaky")
    assert (await core.request(request.id)).state == "open"
    latest = (await core.request(request.id)).evidence
    assert latest and latest.tests and latest.tests.run_id not in (None, seen)
    assert latest.tests.regression_count == 2
    done = await core.override_request(
        request.id, slack("U01"), "both known", run_id=latest.tests.run_id
    )
    assert done.state == "promoted"
    [event] = [
        e for e in (await core.history(NAME)).events
        if e.action == "validation.regressions_overridden"
    ]  # fmt: skip
    assert event.details["run"] == latest.tests.run_id


async def test_an_approver_never_overrides_the_regressions_of_their_own_request(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    await to_production(core)
    # U01, an approver, writes 1.1.0 and asks for staging; its run finds a regression
    await core.push(parse_prompt(prompt_yaml(NAME, "1.1.0", system_prompt="v1.1")), slack("U01"))
    run = await core.start_validation_run(NAME, "1.1.0", slack("U01"), 10, owner="ci")
    request = await core.request_promotion(NAME, "1.1.0", "staging", slack("U01"))
    await core.finish_validation_run(
        run.id, case_results(10), regressions=["refund policy"], owner="ci"
    )
    own = f"you requested {request.code}; someone else must override its regressions"
    with pytest.raises(Forbidden, match=own):
        await core.override_request(request.id, slack("U01"), "fine by me", run_id=run.id)
    with pytest.raises(Forbidden, match=own):
        await core.override_regressions(NAME, "1.1.0", "fine by me", slack("U01"))
    assert (await core.request(request.id)).state == "open"
    done = await core.override_request(request.id, slack("U02"), "known flake", run_id=run.id)
    assert done.state == "promoted"


async def test_the_author_never_overrides_the_regressions_of_their_version(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    await to_production(core)
    await core.push(parse_prompt(prompt_yaml(NAME, "1.1.0", system_prompt="v1.1")), slack("U01"))
    wrote = f"you wrote {NAME} 1.1.0; someone else must override its regressions"
    with pytest.raises(Forbidden, match=wrote):
        await core.record_validation_run(
            NAME,
            "1.1.0",
            case_results(10),
            slack("U01"),
            regressions=["refund policy"],
            regression_override="mine is fine",
        )
    await core.record_validation_run(
        NAME, "1.1.0", case_results(10), slack(REQUESTER), regressions=["refund policy"]
    )
    with pytest.raises(Forbidden, match=wrote):
        await core.override_regressions(NAME, "1.1.0", "mine is fine", slack("U01"))


async def test_an_override_before_asking_does_not_count_for_ones_own_request(
    core: Promptship,
) -> None:
    """promote --override-regressions: the approver overrides, then asks, in one go."""
    await push(core, version="1.0.0")
    await to_production(core)
    await push(core, version="1.1.0", system_prompt="v1.1")
    await core.record_validation_run(
        NAME, "1.1.0", case_results(10), slack(REQUESTER), regressions=["refund policy"]
    )
    await core.override_regressions(NAME, "1.1.0", "fine by me", slack("U01"))
    with pytest.raises(GateRefused, match="overridden, but U01 requested req-.*someone else"):
        await core.request_promotion(NAME, "1.1.0", "staging", slack("U01"))
    await core.override_regressions(NAME, "1.1.0", "known flake", slack("U02"))
    staged = await core.request_promotion(NAME, "1.1.0", "staging", slack("U01"))
    assert staged.state == "promoted"


def test_the_api_refuses_an_override_of_a_replaced_run(api: Served) -> None:
    request = api.core(blocked_request)
    override = f"/v1/requests/req-{request.id}/override"
    assert request.evidence and request.evidence.tests
    seen = request.evidence.tests.run_id
    api.http.post(f"/v1/requests/req-{request.id}/rerun", headers=bearer(api.person["U01"]))
    api.core(lambda c: finish_queued(c, regressions=["refund policy"]))
    for bad in ("7", True, 0):
        wrong = api.http.post(
            override, json={"reason": "x", "run_id": bad}, headers=bearer(api.person["U01"])
        )
        assert wrong.status_code == 400 and "run_id" in wrong.json()["detail"]
    stale = api.http.post(
        override, json={"reason": "fine", "run_id": seen}, headers=bearer(api.person["U01"])
    )
    assert stale.status_code == 409 and "ran again" in stale.json()["detail"], stale.text
    assert api.core(lambda c: c.request(request.id)).state == "open"


async def two_runs_of_1_1_0(core: Promptship) -> tuple[int, int]:
    """1.0.0 in production; 1.1.0's tests ran twice: a regression in "tone", then two
    others."""
    await push(core, version="1.0.0")
    await to_production(core)
    await push(core, version="1.1.0", system_prompt="v1.1")
    first = await core.record_validation_run(
        NAME, "1.1.0", case_results(10), slack(REQUESTER), regressions=["tone"]
    )
    second = await core.record_validation_run(
        NAME, "1.1.0", case_results(10), slack(REQUESTER), regressions=["refund policy", "PII"]
    )
    return first.id, second.id


async def test_a_version_override_binds_to_the_run_the_approver_saw(core: Promptship) -> None:
    first, second = await two_runs_of_1_1_0(core)
    with pytest.raises(BadInput, match=f"the tests of {NAME} 1.1.0 ran more than once"):
        await core.override_regressions(NAME, "1.1.0", "tone is fine", slack("U01"))
    with pytest.raises(Conflict, match=f"ran again since the run you named \\(run {first}\\)"):
        await core.override_regressions(NAME, "1.1.0", "tone is fine", slack("U01"), run_id=first)
    latest = (await core.show(NAME, "1.1.0")).latest_run
    assert latest is not None and latest.id == second and latest.regression_override is None
    run = await core.override_regressions(
        NAME, "1.1.0", "all three known", slack("U01"), run_id=second
    )
    assert run.id == second and run.regression_override == "all three known (by U01)"
    staged = await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    assert staged.state == "promoted"


def test_the_cli_and_the_api_name_the_run_a_version_override_accepts(api: Served) -> None:
    first, second = api.core(two_runs_of_1_1_0)
    approver = api.person["U01"]
    args = ["promote", NAME, "1.1.0", "staging", "--override-regressions", "tone is fine"]
    unnamed = cli(api, approver, *args)
    assert unnamed.exit_code == 2 and "say which run's regressions" in unnamed.stderr
    stale = cli(api, approver, *args, "--run-id", str(first))
    assert stale.exit_code == 2 and f"ran again since the run you named (run {first})" in (
        stale.stderr
    )
    alone = cli(api, approver, "promote", NAME, "1.1.0", "staging", "--run-id", str(second))
    assert alone.exit_code == 2 and "--override-regressions" in alone.stderr
    override = f"/v1/prompts/{NAME}/versions/1.1.0/override"
    refused = api.http.post(
        override, json={"reason": "tone is fine", "run_id": first}, headers=bearer(approver)
    )
    assert refused.status_code == 409 and "ran again" in refused.json()["detail"]
    accepted = api.http.post(
        override, json={"reason": "all known", "run_id": second}, headers=bearer(approver)
    )
    assert accepted.status_code == 200 and accepted.json()["id"] == second, accepted.text
    promoted = cli(api, CI, "promote", NAME, "1.1.0", "staging")
    assert promoted.exit_code == 0 and "promoted" in promoted.stdout, promoted.output


def test_the_api_overrides_and_reruns_for_approvers_only(api: Served) -> None:
    request = api.core(blocked_request)
    override = f"/v1/requests/req-{request.id}/override"
    rerun = f"/v1/requests/req-{request.id}/rerun"
    api.issue("U08", Scope.APPROVE)
    refused = api.http.post(override, json={"reason": "fine"}, headers=bearer(CI))
    assert refused.status_code == 403
    outsider = api.http.post(override, json={"reason": "fine"}, headers=bearer(api.person["U08"]))
    assert outsider.status_code == 403 and "only approvers" in outsider.json()["detail"]
    assert api.http.post(rerun, headers=bearer(api.person["U08"])).status_code == 403
    again = api.http.post(rerun, headers=bearer(api.person["U01"]))
    assert again.status_code == 200 and again.json()["state"] == "open", again.text
    api.core(lambda c: finish_queued(c, regressions=["refund policy"]))  # still failing
    missing = api.http.post(override, json={}, headers=bearer(api.person["U01"]))
    assert missing.status_code == 400
    shown = api.core(lambda c: c.request(request.id)).evidence
    assert shown and shown.tests and shown.tests.run_id
    done = api.http.post(
        override,
        json={"reason": "known flake", "run_id": shown.tests.run_id},
        headers=bearer(api.person["U02"]),
    )
    assert done.status_code == 200 and done.json()["state"] == "promoted", done.text
    tests = done.json()["evidence"]["tests"]
    assert (tests["override_by"], tests["override_reason"]) == ("U02", "known flake")


def test_override_by_modal_and_rerun_by_button_in_slack(bot: Bot) -> None:
    request = bot.core(blocked_request)
    post = wait_for(
        lambda: [
            u for u in bot.double.calls("chat.update")
            if f"req-{request.id}" in u.get("text", "") and "Override with reason" in texts(u)
        ],
        what="the request updated with the override and re-run buttons",
    )[-1]  # fmt: skip
    actions = next(b for b in post["blocks"] if b["type"] == "actions")
    by_label = {e["text"]["text"]: e for e in actions["elements"]}
    value = by_label["Re-run tests"]["value"]
    assert "confirm" in by_label["Re-run tests"]

    _, key = bot.slack.click("rerun", value, user="U08")
    assert "only the requester or an approver can re-run" in texts(bot.reply(key))

    bot.slack.click("override", value, user="U08")
    modal = wait_for(lambda: bot.double.calls("views.open"), what="the modal")[-1]["view"]
    assert modal["callback_id"] == "override_reason" and modal["submit"]["text"] == "Override"
    empty = bot.slack.submit_view("override_reason", modal["private_metadata"], " ", user="U01")
    assert empty.json()["response_action"] == "errors"
    for callback in ("override_reason", "reject_reason"):  # tampered with: answered in the modal
        broken = bot.slack.submit_view(callback, '{"r": "x"', "fine", user="U01")
        assert broken.json()["response_action"] == "errors"
        assert "no longer names a request" in json.dumps(broken.json()["errors"])
    bot.slack.submit_view("override_reason", modal["private_metadata"], "fine", user="U08")
    note = wait_for(lambda: bot.double.calls("chat.postEphemeral"), what="the refusal")[-1]
    assert note["user"] == "U08" and "only approvers can override" in note["text"]
    assert bot.core(lambda c: c.request(request.id)).state == "open"

    ok = bot.slack.submit_view(
        "override_reason", modal["private_metadata"], "refund copy changed", user="U01"
    )
    assert ok.status_code == 200
    note = wait_for(
        lambda: [n for n in bot.double.calls("chat.postEphemeral") if n["user"] == "U01"],
        what="the approver's note",
    )[-1]
    assert "it is promoted" in note["text"]
    final = wait_for(
        lambda: [
            u
            for u in bot.double.calls("chat.update")
            if f"req-{request.id}:" in u.get("text", "") and "(promoted)" in u.get("text", "")
        ],
        what="the request updated to promoted",
    )[-1]
    assert "overridden by <@U01>" in json.dumps(final["blocks"])
    assert not any(b["type"] == "actions" for b in final["blocks"])
