"""Restarting a staging soak (``promptship soak restart`` / ``/prompt soak restart``): the
way on after a soak failed or ran short of traffic, who may do it, and the next steps every
failed soak now shows. Services on both stores; the CLI and the signed Slack path on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from bot.blocks import messages
from bot.grammar import Command, Verb, parse
from promptship.cli import app
from promptship.clock import ManualClock
from promptship.config import Settings
from promptship.errors import BadInput, Forbidden, GateRefused, NotFound, PromptshipError
from promptship.server import create_app
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from promptship.testing.slack_limits import block_problems
from tests.conftest import TEST_POLICY, make_policy
from tests.helpers import REQUESTER, local, push, service, slack, start_staging_soak, to_staging
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, ServerThread, SlackClient, wait_for
from tests.test_soaks import SOAK_POLICY, clean, due, run, staged_with_production

NAME = "customer-support"
RESTART = f"promptship soak restart {NAME}"


@pytest.fixture
def soak_core(db: Database, clock: ManualClock) -> Promptship:
    return Promptship(db, make_policy(SOAK_POLICY), clock)


async def starve(core: Promptship, soak_id: int) -> None:
    """Run every cycle of the soak with no production traffic at all."""
    clock = core.clock
    assert isinstance(clock, ManualClock)
    for cycle in (1, 2, 3):
        clock.advance(timedelta(seconds=1))
        assert await run(core, soak_id, cycle, CycleResult(sample_size=0)) == "insufficient"


async def test_a_restart_after_insufficient_traffic_soaks_again_and_promotes(
    soak_core: Promptship, clock: ManualClock
) -> None:
    first = await staged_with_production(soak_core)
    await starve(soak_core, first)
    with pytest.raises(GateRefused) as refused:
        await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    # the refusal says what to do next, not only what went wrong
    for step in ("prompts.log_traffic(...)", "POST /v1/traffic", "promptship traffic import"):
        assert step in refused.value.message
    assert RESTART in refused.value.message and f"/prompt soak restart {NAME}" in (
        refused.value.message
    )
    assert "break-glass" in refused.value.message

    started = await soak_core.restart_soak(NAME, slack("U01"))
    assert (started.version, started.state, started.cycles_total) == ("1.1.0", "running", 3)
    assert started.id != first
    request = await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    [gate] = [c for c in request.checks if c.gate == "soak"]
    assert (gate.state, gate.detail) == (
        "waiting",
        f"soaking: no cycle done yet of 3, ends {started.ends_at:%H:%M:%S} UTC",
    )
    await soak_core.approve(request.id, slack("U01"))
    await soak_core.approve(request.id, slack("U02"))
    for cycle in (1, 2, 3):
        clock.advance(timedelta(seconds=1))
        assert await run(soak_core, started.id, cycle, clean()) == "passed"
    assert (await soak_core.request(request.id)).state == "promoted"
    [restarted] = [
        e for e in (await soak_core.history(NAME)).events if e.action == "soak.restarted"
    ]
    assert restarted.actor == "U01" and restarted.version == "1.1.0"
    assert restarted.details["auth"] == "slack"
    assert restarted.details["previous_state"] == "insufficient-traffic"


async def test_a_restart_mid_soak_cancels_it_and_the_open_request_reads_the_new_one(
    soak_core: Promptship, clock: ManualClock
) -> None:
    first = await staged_with_production(soak_core)
    request = await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    clock.advance(timedelta(seconds=1))
    assert await run(soak_core, first, 1, clean()) == "passed"
    clock.advance(timedelta(seconds=0.5))
    started = await soak_core.restart_soak(NAME, slack("U02"), "1.1.0")
    newest, cancelled = (await soak_core.soak_status(NAME))[:2]
    assert newest.id == started.id and newest.cycles_done == 0
    assert (cancelled.id, cancelled.state) == (first, "cancelled")
    assert not await soak_core.claim_soak_cycle(first, 2, "r1", timedelta(seconds=30))
    view = await soak_core.request(request.id)
    assert view.state == "open"
    [gate] = [c for c in view.checks if c.gate == "soak"]
    assert gate.detail.startswith("soaking: no cycle done yet of ")
    updates = [d for d in await due(soak_core) if d.topic == "request.updated"]
    assert updates and updates[-1].payload["request"]["id"] == request.id
    # the audit says what the restart interrupted: a soak that was still running
    [restarted] = [
        e for e in (await soak_core.history(NAME)).events if e.action == "soak.restarted"
    ]
    assert (restarted.details["previous_soak"], restarted.details["previous_state"]) == (
        first,
        "running",
    )


async def test_a_version_rolled_back_into_staging_is_not_shown_soaking_and_says_how_to_start(
    soak_core: Promptship, clock: ManualClock
) -> None:
    """1.0.0's soak was cancelled when 1.1.0 replaced it; rolling staging back to 1.0.0 moves
    the pointer only (a rollback starts nothing): its production request must not wait on a
    soak that will never run."""
    await push(soak_core, version="1.0.0")
    await to_staging(soak_core, version="1.0.0")
    await push(soak_core, version="1.1.0", system_prompt="Be brief.")
    await to_staging(soak_core, version="1.1.0")
    await soak_core.rollback(NAME, "staging", slack("U03"), "1.0.0")
    clock.advance(timedelta(hours=5))  # long after the cancelled soak would have ended
    request = await soak_core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    [gate] = [c for c in request.checks if c.gate == "soak"]
    assert (gate.state, gate.detail) == (
        "waiting",
        "staging soak of 3s not started (the last one was cancelled: replaced in staging by "
        f"1.1.0): start one with {RESTART} or /prompt soak restart {NAME}",
    )
    started = await soak_core.restart_soak(NAME, slack("U01"))
    [gate] = [c for c in (await soak_core.request(request.id)).checks if c.gate == "soak"]
    assert gate.detail.startswith("soaking: no cycle done yet of 3")
    await soak_core.approve(request.id, slack("U01"))
    await soak_core.approve(request.id, slack("U02"))
    for cycle in (1, 2, 3):
        clock.advance(timedelta(seconds=1))
        assert await run(soak_core, started.id, cycle, clean()) == "passed"
    assert (await soak_core.request(request.id)).state == "promoted"


async def test_only_approvers_restart_a_soak(soak_core: Promptship) -> None:
    await staged_with_production(soak_core)
    with pytest.raises(Forbidden, match="only approvers can restart the soak of customer-support"):
        await soak_core.restart_soak(NAME, slack(REQUESTER))
    with pytest.raises(Forbidden, match="service identities push and request"):
        await soak_core.restart_soak(NAME, service("ci"))
    with pytest.raises(Forbidden, match="the local CLI cannot restart the soak"):
        await soak_core.restart_soak(NAME, local("U01"))  # self-declared: no decisions
    soaks = await soak_core.soak_status(NAME)
    assert [s.state for s in soaks] == ["running", "passed"]  # staging's, production's; no third


async def test_only_the_staging_version_soaks_and_the_refusal_names_it(
    soak_core: Promptship,
) -> None:
    await staged_with_production(soak_core)
    with pytest.raises(GateRefused) as refused:
        await soak_core.restart_soak(NAME, slack("U01"), "1.0.0")
    assert "customer-support 1.0.0 is not in staging: staging runs 1.1.0" in refused.value.message
    assert f"{RESTART} 1.1.0" in (refused.value.hint or "")
    with pytest.raises(NotFound):
        await soak_core.restart_soak(NAME, slack("U01"), "9.9.9")
    with pytest.raises(NotFound):
        await soak_core.restart_soak("nope", slack("U01"))


async def test_nothing_in_staging_has_no_soak_to_restart(soak_core: Promptship) -> None:
    await push(soak_core)
    with pytest.raises(GateRefused, match="has no version in staging"):
        await soak_core.restart_soak(NAME, slack("U01"))


async def test_soak_min_samples_sets_the_traffic_floor(db: Database, clock: ManualClock) -> None:
    core = Promptship(
        db,
        make_policy(
            """
environments:
  production: {approvals: 2, soak: 3s, soak_interval: 1s, soak_sample: 50,
               max_divergence: 0.1, soak_min_samples: 5}
"""
        ),
        clock,
    )
    soak_id = await staged_with_production(core)
    clock.advance(timedelta(seconds=1))
    assert await run(core, soak_id, 1, CycleResult(sample_size=5)) == "passed"
    clock.advance(timedelta(seconds=1))
    assert await run(core, soak_id, 2, CycleResult(sample_size=4)) == "insufficient"
    clock.advance(timedelta(seconds=1))
    assert await run(core, soak_id, 3, CycleResult(sample_size=5)) == "passed"
    soak = (await core.soak_status(NAME))[0]
    assert soak.state == "insufficient-traffic"
    assert "1 of 3 cycle(s) had fewer than 5 production queries" in (soak.failure or "")
    # the default floor is 20, and a smaller soak_sample still wins
    assert make_policy().environments.production_policy.soak_min_samples == 20
    small = make_policy("environments: {production: {soak_sample: 3}}")
    assert small.environments.production_policy.soak_sample == 3
    with pytest.raises((ValidationError, PromptshipError)):
        make_policy("environments: {production: {soak_min_samples: 0}}")


async def test_a_divergent_soak_says_what_to_do_next_in_the_gate_and_in_slack(
    soak_core: Promptship, clock: ManualClock
) -> None:
    soak_id = await staged_with_production(soak_core)
    request = await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    clock.advance(timedelta(seconds=1))
    worst = [{"input": "<q>", "candidate": "no", "baseline": "yes", "similarity": 0.2}]
    await run(soak_core, soak_id, 1, CycleResult(sample_size=40, divergent=12, worst=worst))
    closed = await soak_core.request(request.id)
    assert closed.state == "failed" and RESTART in (closed.close_reason or "")
    with pytest.raises(GateRefused) as refused:  # a new request reads the failed soak gate
        await soak_core.request_promotion(NAME, "1.1.0", "production", slack(REQUESTER))
    detail = refused.value.message
    assert "staging soak failed: cycle 1: 12 of 40 answers diverged" in detail
    assert RESTART in detail and "break-glass" in detail
    [alert] = [d for d in await due(soak_core) if d.topic == "soak.failed"]
    message = messages.soak_result_message(alert.payload)
    body = json.dumps(message.blocks, ensure_ascii=False)
    assert "*Next:*" in body and f"/prompt soak restart {NAME}" in body
    assert "&lt;q&gt;" in body and "<q>" not in body
    assert block_problems(message.blocks, limit=50) == []


def test_an_old_alert_without_next_steps_still_gets_them_rendered() -> None:
    message = messages.soak_result_message(
        {
            "prompt": NAME,
            "version": "1.1.0",
            "kind": "staging-shadow",
            "failure": "not enough traffic: 3 of 3 cycle(s) had fewer than 20 production queries",
            "worst": [],
        }
    )
    body = json.dumps(message.blocks, ensure_ascii=False)
    assert "prompts.log_traffic(...)" in body and f"/prompt soak restart {NAME}" in body
    assert block_problems(message.blocks, limit=50) == []


def test_a_breakglass_soak_short_of_traffic_is_not_reported_as_reverted() -> None:
    message = messages.soak_result_message(
        {
            "prompt": NAME,
            "version": "1.1.0",
            "kind": "breakglass-production",
            "failure": "not enough traffic: 2 of 2 cycle(s) had fewer than 20 production queries",
            "oncall": ["U03"],
        }
    )
    body = json.dumps(message.blocks, ensure_ascii=False)
    assert "reverted" not in body and "stays in production" in body
    assert "prompts.log_traffic(...)" in body and f"/prompt rollback {NAME} production" in body
    assert "soak restart" not in body  # nothing in staging to restart


def test_the_slack_grammar_has_soak_restart_beside_soak() -> None:
    assert parse(f"soak {NAME}") == Command(Verb.SOAK, name=NAME)
    assert parse(f"soak restart {NAME}") == Command(Verb.SOAK_RESTART, name=NAME)
    expected = Command(Verb.SOAK_RESTART, name=NAME, version="1.1.0")
    assert parse(f"soak restart {NAME} v1.1.0") == expected
    assert parse(f"soak Restart {NAME}@1.1.0") == expected
    for text, message in [
        ("soak restart", "missing the prompt name"),
        (f"soak restart {NAME} soon", "“soon” is not a version like 2.1.0"),
        (f"soak restart {NAME} 1.1.0 now", "unexpected “now”"),
    ]:
        with pytest.raises(BadInput) as err:
            parse(text)
        assert message in err.value.message
        assert "usage: /prompt soak restart <name> [version]" in (err.value.hint or "")


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(tmp_path / "promptship.yaml"))
    monkeypatch.delenv("PROMPTSHIP_USER", raising=False)
    (tmp_path / "promptship.yaml").write_text(
        TEST_POLICY.replace("soak: 0s", "soak: 1h") + "local_decisions: true\n"
    )
    yield tmp_path


def cli_run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_restarts_for_approvers_and_refuses_everyone_else(cli: Path) -> None:
    import asyncio

    async def stage() -> None:
        db = Database(f"sqlite+aiosqlite:///{cli / 'cli.db'}")
        await db.upgrade()
        policy = make_policy("environments: {production: {soak: 1h}}\nlocal_decisions: true")
        try:
            await start_staging_soak(Promptship(db, policy))
        finally:
            await db.dispose()

    asyncio.run(stage())
    code, _, err = cli_run("--as", REQUESTER, "soak", "restart", NAME)
    assert code == 1 and "only approvers can restart the soak of customer-support" in err
    code, _, err = cli_run("--as", "U01", "soak", "restart", "nope")
    assert code == 2 and "no prompt named 'nope'" in err
    code, _, err = cli_run("--as", "U01", "soak", "restart")
    assert code == 2 and "missing the prompt name" in err
    code, _, err = cli_run("--as", "U01", "soak", "restart", NAME, "2.0.0")
    assert code == 2 and "2.0.0" in err  # no such version
    code, out, err = cli_run("--as", "U01", "soak", "restart", NAME, "1.0.0")
    assert code == 0, err
    assert "restarted the staging soak of customer-support 1.0.0" in out
    code, out, _ = cli_run("--json", "soak", NAME)
    assert [s["state"] for s in json.loads(out)] == ["running", "cancelled"]


# -- Slack, signed -----------------------------------------------------------------------------


@pytest.fixture
def soak_bot(tmp_path: Path) -> Iterator[tuple[SlackClient, SlackDouble, str]]:
    policy = make_policy("environments: {production: {soak: 1h}}")
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    with SlackDouble(token=BOT_TOKEN, usergroups={"S0GROUP": ["U05"]}) as double:
        app_ = create_app(
            Settings(
                PROMPTSHIP_DATABASE_URL=db_url,
                SLACK_BOT_TOKEN=BOT_TOKEN,
                SLACK_SIGNING_SECRET=SIGNING_SECRET,
                SLACK_API_URL=double.api_url,
            ),
            policy,
        )
        with ServerThread(app_) as server:
            client = SlackClient(server.url, double)
            yield client, double, db_url
            client.close()
        assert double.refused == [], "every message the bot sent must pass Slack's limits"


def reply_text(double: SlackDouble, key: str) -> tuple[str, dict[str, Any]]:
    reply = wait_for(lambda: double.responses(key), what=f"a reply on {key}")[-1]
    return json.dumps(reply.get("blocks", []), ensure_ascii=False) + reply.get("text", ""), reply


def test_slash_soak_restart_through_signed_slack(
    soak_bot: tuple[SlackClient, SlackDouble, str],
) -> None:
    import asyncio

    client, double, db_url = soak_bot
    policy = make_policy("environments: {production: {soak: 1h}}")

    async def with_core(use: Any) -> Any:
        db = Database(db_url)
        try:
            return await use(Promptship(db, policy))
        finally:
            await db.dispose()

    asyncio.run(with_core(start_staging_soak))
    _, key = client.command(f"soak restart {NAME}", user=REQUESTER)
    text, _ = reply_text(double, key)
    assert "only approvers can restart the soak" in text
    _, key = client.command(f"soak restart {NAME} 3.0.0", user="U01")
    text, _ = reply_text(double, key)
    assert "3.0.0" in text
    _, key = client.command(f"soak restart {NAME}", user="U01")
    text, reply = reply_text(double, key)
    assert reply["response_type"] == "in_channel"
    assert "restarted the staging soak of *customer-support* `1.0.0`" in text
    soaks = asyncio.run(with_core(lambda core: core.soak_status(NAME)))
    assert [s.state for s in soaks] == ["running", "cancelled"]
    _, key = client.command("help")
    text, _ = reply_text(double, key)
    assert "/prompt soak restart &lt;name&gt; [version]" in text
