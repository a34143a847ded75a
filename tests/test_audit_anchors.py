"""What the keyed chain alone cannot see: deleting the newest events (with ``audit_head``
moved back) is caught by signed checkpoints kept outside the database, and rows written
straight into the gate's tables are caught by cross-checking them against the log."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import insert

from bot.blocks.audit import checkpoint_message
from bot.dispatcher import SlackDispatcher
from promptship.auditkeys import MissingAuditKey
from promptship.cli.audit import fetch_checkpoints
from promptship.cli.common import state
from promptship.clock import ManualClock
from promptship.config import Settings
from promptship.services import Promptship
from promptship.services.checkpoints import Checkpoint, find_line
from promptship.soak.scheduler import Scheduler
from promptship.store.db import Database
from promptship.store.models import Approval
from promptship.testing.slack_double import SlackDouble, block_problems
from tests.conftest import TEST_POLICY, make_policy
from tests.helpers import REQUESTER, pass_tests, push, slack, to_production, to_staging
from tests.test_audit import tamper
from tests.test_cli import EXAMPLES, run

CHANNEL = "C0PROMPTOPS"
TOKEN = "xoxb-test-token"


async def deliver(core: Promptship, slack: SlackDouble) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.api_url)
    while await SlackDispatcher(core, client, worker="w1").deliver_once():
        pass


async def truncate_to(core: Promptship, seq: int) -> None:
    """Delete every event after ``seq``, move ``audit_head`` back to it, and delete the
    stored checkpoints: all an attacker with database access needs to do."""
    await tamper(core, "DELETE FROM audit_events WHERE seq > :n", n=seq)
    await tamper(
        core,
        "UPDATE audit_head SET seq = :n, hash = (SELECT hash FROM audit_events WHERE seq = :n)",
        n=seq,
    )
    await tamper(core, "DELETE FROM audit_checkpoints")


async def test_a_production_promotion_posts_a_signed_checkpoint_that_reads_back(
    core: Promptship,
) -> None:
    await push(core)
    await to_production(core)
    (stored,) = await core.audit_checkpoints()
    assert stored.reason == "promote customer-support 1.0.0"
    with SlackDouble(token=TOKEN) as slack:
        await deliver(core, slack)
        assert slack.refused == []
        posted = [
            c for c in slack.calls("chat.postMessage") if c["text"].startswith("promptship-c")
        ]
        assert len(posted) == 1 and "signed with key `test`" in str(posted[0]["blocks"])
        from_channel = await fetch_checkpoints(
            AsyncWebClient(token=TOKEN, base_url=slack.api_url), CHANNEL
        )
    assert from_channel == [Checkpoint(stored.seq, stored.hash, stored.at, "test", stored.mac)]
    result = await core.verify_audit(from_channel)
    assert result.ok and result.newest_checkpoint == stored.seq


def test_the_checkpoint_message_stays_within_slacks_limits() -> None:
    line = (
        "promptship-checkpoint seq=123456789 hash=" + "a" * 64 + " at=2026-01-01T09:00:00.000000Z"
        " key=" + "k" * 32 + " mac=" + "b" * 64
    )
    checkpoint = find_line(line)
    assert checkpoint is not None
    payload = {**checkpoint.as_json(), "reason": "rollback " + "p" * 64 + " <!channel>"}
    message = checkpoint_message(payload)
    assert block_problems(message.blocks, limit=50) == []
    assert find_line(message.text) == checkpoint and "<!channel>" not in str(message.blocks)


async def test_deleting_the_newest_events_is_caught_by_the_channels_checkpoints(
    core: Promptship,
) -> None:
    await push(core)
    await to_production(core)
    for version in ("1.1.0", "1.2.0"):
        await push(core, version=version, system_prompt=f"Version {version}.")
    await pass_tests(core, "customer-support", "1.2.0")  # ends the log with a test run
    newest = await core.checkpoint_audit()
    assert newest is not None
    with SlackDouble(token=TOKEN) as slack:
        await deliver(core, slack)
        await truncate_to(core, newest.seq - 2)
        assert (await core.verify_audit()).ok  # the chain alone cannot tell
        from_channel = await fetch_checkpoints(
            AsyncWebClient(token=TOKEN, base_url=slack.api_url), CHANNEL
        )
    assert len(from_channel) == 2
    assert (await core.verify_audit(from_channel)).problems == [
        f"the checkpoint made 2026-01-01 09:00:00 UTC vouches for event {newest.seq}, but the "
        f"chain ends at event {newest.seq - 2}: the newest events were deleted"
    ]


async def test_a_forged_checkpoint_and_a_rewritten_event_are_reported(core: Promptship) -> None:
    await push(core)
    made = await core.checkpoint_audit()
    assert made is not None
    forged = Checkpoint(made.seq + 5, made.hash, made.at, made.key_id, made.mac)
    rewritten = Checkpoint(made.seq, "e" * 64, made.at, made.key_id, made.mac)
    assert (await core.verify_audit([forged, rewritten])).problems == [
        f"the checkpoint of event {made.seq + 5} said to be made 2026-01-01 09:00:00 UTC is "
        "forged: its MAC does not match key 'test'",
        f"the checkpoint of event {made.seq} said to be made 2026-01-01 09:00:00 UTC is "
        "forged: its MAC does not match key 'test'",
    ]


async def test_an_approval_inserted_into_the_database_does_not_count_and_is_reported(
    core: Promptship,
) -> None:
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(
        "customer-support", "1.0.0", "production", slack(REQUESTER)
    )
    await core.approve(request.id, slack("U01"))
    async with core.db.engine.begin() as conn:
        await conn.execute(
            insert(Approval).values(
                request_id=request.id,
                user_id="U06",
                approve=True,
                comment=None,
                content_hash=request.content_hash,
                roles=["approvers"],
                created_at=core.clock.now(),
            )
        )
    after = await core.request(request.id)
    assert after.state == "open" and [d.user for d in after.decisions] == ["U01"]
    assert (await core.verify_audit()).problems == [
        f"{request.code} has an approval by U06 that the audit log never recorded "
        "(inserted into the database directly?)"
    ]
    outcome = await core.approve(request.id, slack("U02"))  # the second real approval promotes
    assert outcome.request.state == "promoted"


async def test_pointers_and_closed_requests_changed_by_sql_are_reported(
    core: Promptship,
) -> None:
    await push(core)
    await to_staging(core)
    await push(core, version="1.1.0", system_prompt="Be brief.")
    await tamper(
        core,
        "UPDATE deployments SET version_id = "
        "(SELECT id FROM prompt_versions WHERE version = '1.1.0') WHERE environment = 'staging'",
    )
    opened = await core.request_promotion(
        "customer-support", "1.0.0", "production", slack(REQUESTER)
    )
    await tamper(
        core, "UPDATE promotion_requests SET state = 'cancelled' WHERE id = :i", i=opened.id
    )
    assert (await core.verify_audit()).problems == [
        "customer-support runs 1.1.0 in staging, but the audit log's last deployment there was "
        "1.0.0 (the pointer was changed directly?)",
        f"{opened.code} is cancelled, but the audit log never recorded it closing "
        "(changed in the database directly?)",
    ]


async def test_the_scheduled_checkpoint_is_made_once_per_tick_and_only_when_the_log_grew(
    core: Promptship, clock: ManualClock
) -> None:
    assert await core.scheduled_audit_checkpoint("audit-checkpoint:t1", "replica-a") is None
    await push(core)
    made = await core.scheduled_audit_checkpoint("audit-checkpoint:t2", "replica-a")
    assert made is not None and made.reason == "scheduled"
    assert await core.scheduled_audit_checkpoint("audit-checkpoint:t2", "replica-b") is None
    assert await core.scheduled_audit_checkpoint("audit-checkpoint:t3", "replica-b") is None
    await push(core, version="1.1.0", system_prompt="Be brief.")
    clock.advance(3600)
    replicas = [Scheduler(core, run_cycle=None, owner=o) for o in ("a", "b")]  # type: ignore[arg-type]
    for replica in replicas:  # both fire the hourly job; one checkpoint is made
        await replica.audit_checkpoint()
    assert len(await core.audit_checkpoints()) == 2
    due = [d.topic for d in await core.due_notifications(CHANNEL, limit=100)]
    assert due.count("audit.checkpoint") == 2


# -- start-up: the key is required outside SQLite trial mode ------------------------------


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PROMPTSHIP_AUDIT_KEY")
    yield


@pytest.mark.postgres
def test_without_a_key_postgresql_refuses_to_start_and_to_write(
    postgres_url: str, no_key: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptship.server import create_app

    with pytest.raises(MissingAuditKey) as refused:
        create_app(Settings(PROMPTSHIP_DATABASE_URL=postgres_url), workers=False)
    assert refused.value.hint and "promptship audit keygen" in refused.value.hint

    (tmp_path / "promptship.yaml").write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", postgres_url)
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(tmp_path / "promptship.yaml"))
    code, _, err = run("audit", "verify")
    assert code == 2 and "PROMPTSHIP_AUDIT_KEY is not set" in err
    assert "promptship audit keygen" in err

    async def write() -> None:
        core = Promptship(Database(postgres_url), make_policy())
        try:
            with pytest.raises(MissingAuditKey):
                await push(core, name="never-written")
            assert [s.name for s in await core.status()].count("never-written") == 0
        finally:
            await core.db.dispose()

    asyncio.run(write())


def test_keygen_prints_a_fresh_key(no_key: None) -> None:
    code, first, _ = run("audit", "keygen", "--id", "k2")
    _, second, _ = run("audit", "keygen")
    assert code == 0 and first.startswith("k2:") and second.startswith("k1:")
    assert len(first.strip()) == len("k2:") + 44 and first != second
    code, _, err = run("audit", "keygen", "--id", "no spaces")
    assert code == 2 and "not a key id" in err


@pytest.fixture
def trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_key: None) -> Path:
    (tmp_path / "promptship.yaml").write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(tmp_path / "promptship.yaml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sqlite_trial_mode_keeps_its_key_in_a_private_file_beside_the_database(
    trial: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from promptship.server import create_app

    key_file = trial / "cli.db.audit-key"
    with caplog.at_level(logging.WARNING, logger="promptship.server"):
        create_app(Settings(), workers=False)
    assert key_file.exists() and f"trial key in {key_file}" in caplog.text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("k1:")
    code, _, _ = run("--as", "U09", "push", str(EXAMPLES))
    assert code == 0
    code, out, _ = run("audit", "verify")
    assert code == 0 and "2 events verified" in out


def test_cli_checkpoints_file_and_slack_catch_a_truncation(
    trial: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("--as", "U09", "push", str(EXAMPLES / "customer-support.yaml"))
    run("--as", "U09", "push", str(EXAMPLES / "sql-assistant.yaml"))
    code, line, _ = run("audit", "checkpoint")
    assert code == 0 and line.startswith("promptship-checkpoint seq=2 ")
    code, out, _ = run("audit", "checkpoints", "-o", "kept.jsonl")
    assert code == 0 and "wrote 1 checkpoint(s)" in out
    code, listed, _ = run("audit", "checkpoints", "--json")
    (trial / "listed.json").write_text(listed)

    with sqlite3.connect(trial / "cli.db") as conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 2")
        # the writer removes the version too, so no cross-check notices the gap
        conn.execute(
            "DELETE FROM prompt_versions WHERE prompt_id = "
            "(SELECT id FROM prompts WHERE name = 'sql-assistant')"
        )
        conn.execute("UPDATE audit_head SET seq = 1, hash = (SELECT hash FROM audit_events)")
        conn.execute("DELETE FROM audit_checkpoints")
    code, out, _ = run("audit", "verify")
    assert code == 0 and "--checkpoints FILE or --from-slack" in out
    deleted = "vouches for event 2, but the chain ends at event 1: the newest events were deleted"
    for kept in ("kept.jsonl", "listed.json"):
        code, _, err = run("audit", "verify", "--checkpoints", kept)
        assert code == 1 and deleted in err
    (trial / "junk.jsonl").write_text("not a checkpoint\n")
    code, _, err = run("audit", "verify", "--checkpoints", "junk.jsonl")
    assert code == 2 and "junk.jsonl:1: not a checkpoint" in err

    with SlackDouble(token=TOKEN) as slack:
        slack.post_to_history(CHANNEL, "unrelated chatter")
        slack.post_to_history(CHANNEL, line.strip())
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        state.settings = None
        code, _, err = run("audit", "verify", "--from-slack")
    assert code == 1 and deleted in err
