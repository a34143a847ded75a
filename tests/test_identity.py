"""Decisions are tied to authenticated people: services never decide, the local CLI only in
a trial that says so, regression overrides are an approver's, and the person rules compare
people across identities. On both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from bot.blocks import messages
from promptship.cli import app
from promptship.cli.common import state
from promptship.clock import ManualClock, SystemClock
from promptship.config import Policy
from promptship.domain.identity import Actor, Via
from promptship.errors import BadInput, Forbidden
from promptship.services import Promptship
from promptship.services.views import AuditEventView
from promptship.store.db import Database
from tests.conftest import TEST_POLICY, make_policy, prompt_yaml
from tests.helpers import (
    REQUESTER,
    case_results,
    local,
    pass_tests,
    push,
    service,
    slack,
    to_production,
    to_staging,
)

T = TypeVar("T")
NAME = "customer-support"
CI = service("ci-github")


async def events(core: Promptship, action: str) -> list[AuditEventView]:
    return [e for e in await core.recent_events(200) if e.action == action]


async def production_request(core: Promptship) -> int:
    await push(core)
    await to_staging(core)
    return (await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))).id


# -- services ------------------------------------------------------------------------------


async def test_a_slack_approval_records_how_the_approver_was_known(core: Promptship) -> None:
    await push(core)
    await to_production(core)
    approved = await events(core, "request.approved")
    assert {e.actor for e in approved} == {"U01", "U02"}
    assert all(e.details["auth"] == "slack" for e in approved)
    view = await core.request(approved[0].request_id or 0)
    assert [d.via for d in view.decisions] == ["slack", "slack"]


async def test_a_service_pushes_and_requests_but_never_decides(core: Promptship) -> None:
    await push(core)
    await pass_tests(core, NAME, "1.0.0")
    staged = await core.request_promotion(NAME, "1.0.0", "staging", CI)
    assert staged.state == "promoted"
    [created] = await events(core, "request.created")
    assert created.actor == "ci-github" and created.details["service"] == "true"
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    with pytest.raises(Forbidden, match="service identities push and request; they never decide"):
        await core.approve(request.id, CI)
    with pytest.raises(Forbidden, match="never decide"):
        await core.reject(request.id, CI, "no")
    await core.approve(request.id, slack("U01"))
    await core.approve(request.id, slack("U02"))
    await push(core, version="1.1.0", system_prompt="v1.1")
    await core.record_validation_run(
        NAME, "1.1.0", case_results(10), CI, regressions=["refund policy"]
    )
    with pytest.raises(Forbidden, match="never decide"):
        await core.override_regressions(NAME, "1.1.0", "known flake", CI)
    with pytest.raises(Forbidden, match="never decide"):
        await core.rollback(NAME, "production", CI)
    assert (await core.request(request.id)).state == "promoted"
    assert not await events(core, "validation.regressions_overridden")
    assert not await events(core, "deployment.rolled_back")


async def test_the_local_cli_does_not_decide_unless_the_policy_allows_it(
    core: Promptship,
) -> None:
    request_id = await production_request(core)
    for decide in (
        core.approve(request_id, local("U01")),
        core.reject(request_id, local("U01"), "no"),
        core.rollback(NAME, "production", local("U03")),
    ):
        with pytest.raises(Forbidden, match="the local CLI cannot") as refused:
            await decide
        assert refused.value.hint and "PROMPTSHIP_TOKEN=" in refused.value.hint
        assert "/prompt token" in refused.value.hint
    assert (await core.request(request_id)).decisions == []


async def test_the_local_cli_cancels_only_its_own_request_unless_the_policy_allows_decisions(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy(), clock)
    request_id = await production_request(core)
    with pytest.raises(Forbidden, match="the local CLI cannot cancel someone else's request"):
        await core.cancel(request_id, local("U01"))  # an approver, self-declared
    assert (await core.request(request_id)).state == "open"
    assert (await core.cancel(request_id, local(REQUESTER))).state == "cancelled"

    trial = Promptship(db, make_policy("local_decisions: true"), clock)
    request = await trial.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    assert (await trial.cancel(request.id, local("U01"))).state == "cancelled"


async def test_only_slack_hands_a_person_their_own_token(core: Promptship) -> None:
    issued = await core.create_own_token(slack("U01"))
    assert issued.secret.startswith("psk_") and issued.token.subject == "U01"
    # a token never mints its successor: a leaked one would renew itself for ever
    for actor in (Actor("U01", Via.TOKEN), Actor("U04", Via.TOKEN, proxy="U02"), local("U01")):
        with pytest.raises(Forbidden, match="only a person signed in through Slack") as refused:
            await core.create_own_token(actor)
        assert refused.value.hint == "ask in Slack with /prompt token"


async def test_rolling_back_staging_is_no_decision(core: Promptship) -> None:
    await push(core)
    await to_staging(core)
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_staging(core, version="1.1.0")
    result = await core.rollback(NAME, "staging", local("U03"))
    assert result.to_version == "1.0.0" and result.via == "local"


async def test_local_decisions_in_a_trial_are_marked_unverified(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("local_decisions: true"), clock)
    await push(core)
    await to_production(core)
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_staging(core, version="1.1.0")
    request = await core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    await core.approve(request.id, local("U01"))
    shown = json.dumps(messages.request_message(await core.request(request.id)).payload())
    assert "<@U01> via local CLI, unverified" in shown
    assert (await core.approve(request.id, slack("U02"))).request.state == "promoted"
    shown = json.dumps(messages.request_message(await core.request(request.id)).payload())
    assert "<@U01> via local CLI, unverified, <@U02>" in shown
    result = await core.rollback(NAME, "production", local("U03"), reason="checking")
    assert result.to_version == "1.0.0" and result.via == "local"
    rolled = messages.rollback_message(result)
    assert "<@U03> via local CLI, unverified" in json.dumps(rolled.payload())
    decided = {e.request_id: e for e in await events(core, "request.approved") if e.actor == "U01"}
    assert decided[request.id].details["auth"] == "local"


async def test_overriding_regressions_takes_an_approver(core: Promptship) -> None:
    await push(core)
    await core.record_validation_run(
        NAME, "1.0.0", case_results(10), slack(REQUESTER), regressions=["refund policy"]
    )
    with pytest.raises(Forbidden, match="only approvers can override the regressions"):
        await core.override_regressions(NAME, "1.0.0", "it is fine", slack(REQUESTER))
    with pytest.raises(Forbidden, match="only approvers"):
        await core.record_validation_run(
            NAME,
            "1.0.0",
            case_results(10),
            slack(REQUESTER),
            regressions=["refund policy"],
            regression_override="my own wave-through",
        )
    run = await core.override_regressions(NAME, "1.0.0", "known flake", slack("U01"))
    assert run.regression_override == "known flake (by U01)"
    [overridden] = await events(core, "validation.regressions_overridden")
    assert overridden.actor == "U01" and overridden.details["auth"] == "slack"
    staged = await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    assert staged.state == "promoted"


async def test_person_rules_compare_people_across_identities(
    db: Database, clock: ManualClock
) -> None:
    policy = make_policy("roles: {approvers: [U01, U02, U07]}\nidentities: {'github:alice': U07}")
    core = Promptship(db, policy, clock)
    # CI pushes alice's change: she is its author, so she cannot approve it
    alice_via_ci = Actor("github:alice", Via.TOKEN, proxy="ci-github")
    pushed = await core.push(_spec(), alice_via_ci)
    assert pushed.created
    assert (await core.show(NAME, "1.0.0")).author == "U07"
    [registered] = await events(core, "version.registered")
    assert registered.details["on_behalf_of_by"] == "ci-github"
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", alice_via_ci)
    assert request.requester == "U07"
    with pytest.raises(Forbidden, match="you requested req-"):
        await core.approve(request.id, slack("U07"))
    assert (await core.approve(request.id, slack("U01"))).recorded


def _spec() -> Any:
    from promptship.domain.promptfile import parse_prompt

    return parse_prompt(prompt_yaml(NAME, "1.0.0"))


def test_resolve_identity_maps_outside_names_or_names_the_missing_one() -> None:
    async def go(policy: Policy) -> None:
        core = Promptship(Database("sqlite+aiosqlite://"), policy, SystemClock())
        assert core.resolve_identity("U01ABC") == "U01ABC"
        assert core.resolve_identity("github:alice") == "U07"
        assert core.resolve_identity("alice@example.com") == "W0ALICE"
        with pytest.raises(BadInput) as refused:
            core.resolve_identity("github:bob")
        assert refused.value.message == (
            "github:bob is not a Slack user ID and not mapped under identities: in promptship.yaml"
        )
        await core.db.dispose()

    asyncio.run(go(make_policy("identities: {'github:alice': U07, 'alice@example.com': W0ALICE}")))
    with pytest.raises(BadInput, match="not a Slack user ID"):
        make_policy("identities: {'github:alice': alice}")


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Database
) -> Iterator[Path]:
    """A CLI against the test database (both kinds); ``db`` leaves it empty."""
    (tmp_path / "promptship.yaml").write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", database_url)
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(tmp_path / "promptship.yaml"))
    monkeypatch.delenv("PROMPTSHIP_USER", raising=False)
    monkeypatch.chdir(tmp_path)
    state.settings = None
    yield tmp_path
    state.settings, state.actor, state.as_json = None, None, False


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def with_core(policy: Policy, use: Callable[[Promptship], Awaitable[T]]) -> T:
    async def go() -> T:
        import os

        db = Database(os.environ["PROMPTSHIP_DATABASE_URL"])
        try:
            return await use(Promptship(db, policy, SystemClock()))
        finally:
            await db.dispose()

    return asyncio.run(go())


def open_production_request(policy: Policy) -> int:
    async def build(core: Promptship) -> int:
        await push(core)
        await to_staging(core)
        request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
        return request.id

    return with_core(policy, build)


def test_one_shell_cannot_cast_two_approvals_with_as(cli: Path) -> None:
    request_id = open_production_request(make_policy())
    code, _, err = run("--as", "U01", "approve", f"req-{request_id}")
    assert code == 1 and "the local CLI cannot approve" in err
    assert "PROMPTSHIP_TOKEN=" in err and "/prompt token" in err
    code, _, err = run("--as", "U02", "approve", f"req-{request_id}")
    assert code == 1 and "the local CLI cannot approve" in err
    code, _, err = run("--as", "U03", "rollback", NAME, "production")
    assert code == 1 and "the local CLI cannot roll back production" in err
    view = with_core(make_policy(), lambda core: core.request(request_id))
    assert view.state == "open" and view.decisions == []


def test_one_shell_cannot_cancel_someone_elses_request_with_as(cli: Path) -> None:
    request_id = open_production_request(make_policy())
    code, _, err = run("--as", "U01", "cancel", f"req-{request_id}")
    assert code == 1 and "the local CLI cannot cancel someone else's request" in err
    assert with_core(make_policy(), lambda core: core.request(request_id)).state == "open"


def test_a_trial_with_local_decisions_marks_them_unverified(cli: Path) -> None:
    (cli / "promptship.yaml").write_text(TEST_POLICY + "local_decisions: true\n")
    policy = make_policy("local_decisions: true")
    request_id = open_production_request(policy)
    assert run("--as", "U01", "approve", f"req-{request_id}")[0] == 0
    code, out, _ = run("--as", "U02", "approve", f"req-{request_id}")
    assert code == 0 and "is now in production" in out

    async def look(core: Promptship) -> tuple[Any, list[AuditEventView]]:
        return await core.request(request_id), await events(core, "request.approved")

    view, approved = with_core(policy, look)
    assert view.state == "promoted"
    assert {(e.actor, e.details["auth"]) for e in approved} == {("U01", "local"), ("U02", "local")}
    shown = json.dumps(messages.request_message(view).payload())
    assert "<@U01> via local CLI, unverified" in shown
    assert "<@U02> via local CLI, unverified" in shown


def test_overriding_regressions_from_the_cli_takes_an_approver(cli: Path) -> None:
    (cli / "promptship.yaml").write_text(TEST_POLICY + "local_decisions: true\n")

    async def regressed(core: Promptship) -> None:
        await push(core)
        await core.record_validation_run(
            NAME, "1.0.0", case_results(10), slack(REQUESTER), regressions=["refund policy"]
        )

    with_core(make_policy(), regressed)
    promote = ("promote", NAME, "1.0.0", "staging", "--override-regressions", "fine")
    code, _, err = run("--as", REQUESTER, *promote)
    assert code == 1 and "only approvers can override the regressions" in err
    code, _, err = run("--as", "U01", *promote)  # U01's override, for U01's own request
    assert code == 1 and "U01 requested req-" in err and "someone else must override" in err
    code, out, _ = run("--json", "--as", REQUESTER, "promote", NAME, "1.0.0", "staging")
    assert code == 0 and json.loads(out)["state"] == "promoted"


def test_without_local_decisions_the_cli_cannot_override_either(cli: Path) -> None:
    async def regressed(core: Promptship) -> None:
        await push(core)
        await core.record_validation_run(
            NAME, "1.0.0", case_results(10), slack(REQUESTER), regressions=["refund policy"]
        )

    with_core(make_policy(), regressed)
    code, _, err = run(
        "--as", "U01", "promote", NAME, "1.0.0", "staging", "--override-regressions", "fine"
    )
    assert code == 1 and "the local CLI cannot override the regressions" in err
