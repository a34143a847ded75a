"""Verifying part of the audit chain: from an event on, or from the newest genuine
checkpoint on (it vouches for the events before it), on both stores and from the CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from promptship.errors import BadInput
from promptship.services import Promptship, audit, verification
from promptship.services.checkpoints import Checkpoint
from tests.conftest import TEST_POLICY, prompt_yaml
from tests.helpers import push
from tests.test_audit import build_history, rechain
from tests.test_audit_scan import sql
from tests.test_cli import EXAMPLES, run


async def verified(
    core: Promptship, start: int | None = None, since_checkpoint: bool = False
) -> audit.Verification:
    """The range verified in this process and by three worker processes: the same."""
    found = []
    for workers, parallel_min in ((1, 1), (3, 1)):
        async with core.db.reader() as session:
            found.append(
                await verification.verify(
                    session,
                    start=start,
                    since_checkpoint=since_checkpoint,
                    workers=workers,
                    parallel_min=parallel_min,
                )
            )
    here, split = found
    assert (here.problems, here.checked, here.start, here.end) == (
        split.problems,
        split.checked,
        split.start,
        split.end,
    )
    return here


async def test_a_range_checks_the_events_from_its_start_only(core: Promptship) -> None:
    total = await build_history(core)
    found = await verified(core, start=10)
    assert found.ok and not found.whole
    assert (found.start, found.end, found.checked) == (10, total, total - 9)

    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = 4")
    assert (await verified(core, start=10)).ok  # before the range: left to a whole verify
    assert (await core.verify_audit()).problems == [
        "event 4 was edited: its content no longer matches its hash"
    ]
    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = 12")
    assert (await verified(core, start=10)).problems == [
        "event 12 was edited: its content no longer matches its hash"
    ]


async def test_a_ranges_first_event_must_follow_the_one_before(core: Promptship) -> None:
    await build_history(core)
    await sql(core, "UPDATE audit_events SET hash = :h WHERE seq = 9", h="f" * 64)
    assert (await verified(core, start=10)).problems == [
        "event 10 does not follow the event before it"
    ]


async def test_an_unsigned_event_in_a_range_is_tampering_as_in_the_whole_chain(
    core: Promptship,
) -> None:
    await build_history(core)
    await rechain(core, 12, lambda seq: None, actor="U66")
    problem = (
        "event 12 is not signed although event 1 before it was: it was written around the key "
        "(tampering)"
    )
    assert (await verified(core, start=10)).problems[0] == problem
    assert (await core.verify_audit()).problems[0] == problem


async def test_deleting_the_newest_events_shows_in_a_range_against_kept_checkpoints(
    core: Promptship,
) -> None:
    await build_history(core)
    made = await core.checkpoint_audit()
    assert made is not None
    await sql(core, "DELETE FROM audit_events WHERE seq > 8")
    await sql(
        core,
        "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit_events WHERE seq = 8)",
    )
    await sql(core, "DELETE FROM audit_checkpoints")
    assert (await core.verify_audit(start=5)).ok  # the chain alone cannot tell
    assert (await core.verify_audit([made], start=5)).problems == [
        f"the checkpoint made 2026-01-01 09:00:00 UTC vouches for event {made.seq}, but the "
        "chain ends at event 8: the newest events were deleted"
    ]


async def test_a_range_past_the_end_is_refused(core: Promptship) -> None:
    total = await build_history(core)
    found = await core.verify_audit(start=total + 1)  # nothing yet: a quiet start
    assert found.ok and (found.checked, found.end) == (0, total)
    with pytest.raises(BadInput, match=f"ends at event {total}"):
        await core.verify_audit(start=total + 2)


async def test_resuming_starts_at_the_newest_genuine_checkpoint(core: Promptship) -> None:
    await build_history(core)
    await push(core, version="1.2.0", system_prompt="Be kind.")
    newest = await core.checkpoint_audit()
    assert newest is not None
    await push(core, version="1.3.0", system_prompt="Be calm.")
    async with core.db.reader() as session:
        head = (await session.execute(text("SELECT seq FROM audit_head"))).scalar_one()
    forged = Checkpoint(head, "e" * 64, newest.at, "test", "0" * 64)
    await sql(
        core,
        "INSERT INTO audit_checkpoints (seq, hash, at, key_id, mac, reason) "
        "SELECT :seq, :hash, at, key_id, :mac, 'forged' FROM audit_checkpoints "
        "WHERE seq = :newest",
        seq=forged.seq,
        hash=forged.hash,
        mac=forged.mac,
        newest=newest.seq,
    )

    found = await verified(core, since_checkpoint=True)
    assert found.resumed_from == newest
    assert (found.start, found.end, found.checked) == (newest.seq, head, head - newest.seq + 1)
    assert found.problems == [
        f"the checkpoint of event {head} said to be made 2026-01-01 09:00:00 UTC is forged: "
        "its MAC does not match key 'test'"
    ]
    await sql(core, "DELETE FROM audit_checkpoints WHERE reason = 'forged'")
    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = :s", s=newest.seq - 1)
    assert (await verified(core, since_checkpoint=True)).ok  # vouched for by the checkpoint
    await sql(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = :s", s=newest.seq)
    assert (await verified(core, since_checkpoint=True)).problems == [
        f"event {newest.seq} was edited: its content no longer matches its hash"
    ]


async def test_without_a_checkpoint_resuming_checks_the_whole_chain(core: Promptship) -> None:
    await push(core)
    found = await core.verify_audit(since_checkpoint=True)
    assert found.ok and found.whole and found.resumed_from is None and found.start == 1


# -- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "promptship.yaml").write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(tmp_path / "promptship.yaml"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_cli_verifies_from_an_event_or_the_newest_checkpoint(cli: Path) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    code, line, _ = run("audit", "checkpoint")
    assert code == 0 and line.startswith("promptship-checkpoint seq=2 ")
    (cli / "new.yaml").write_text(prompt_yaml("new-prompt"))
    run("--as", "U09", "push", str(cli / "new.yaml"))

    code, out, _ = run("audit", "verify", "--since-checkpoint")
    assert code == 0
    assert "audit log intact: events 2..3 (2), from the checkpoint of event 2 made " in out
    assert "which vouches for the events before it" in out
    assert "the tables' cross-checks and the events before the range" in out
    code, out, _ = run("audit", "verify", "--from", "3")
    assert code == 0 and "events 3..3 (1), from event 3 on" in out
    code, out, _ = run("--json", "audit", "verify", "--since-checkpoint")
    shown = json.loads(out)
    assert (shown["ok"], shown["start"], shown["end"], shown["whole"]) == (True, 2, 3, False)
    assert shown["resumed_from"]["seq"] == 2

    with sqlite3.connect(cli / "cli.db") as conn:
        conn.execute("UPDATE audit_events SET actor = 'U66' WHERE seq = 3")
    code, _, err = run("audit", "verify", "--from", "3")
    assert code == 1 and "1 problem(s) in events 3..3 (1), from event 3 on" in err
    assert "event 3 was edited" in err

    code, _, err = run("audit", "verify", "--from", "2", "--since-checkpoint")
    assert code == 2 and "choose the start twice" in err
    code, _, err = run("audit", "verify", "--from", "9")
    assert code == 2 and "the audit log ends at event 3" in err


async def test_resuming_from_a_checkpoint_whose_event_was_deleted_reports_the_deletion(
    core: Promptship,
) -> None:
    await build_history(core)
    newest = await core.checkpoint_audit()
    assert newest is not None
    await sql(core, "DELETE FROM audit_events WHERE seq > 8")
    await sql(
        core,
        "UPDATE audit_head SET seq = 8, hash = (SELECT hash FROM audit_events WHERE seq = 8)",
    )
    found = await verified(core, since_checkpoint=True)
    assert found.resumed_from == newest and (found.start, found.checked) == (9, 0)
    assert found.problems == [  # the older checkpoint too
        f"the checkpoint made 2026-01-01 09:00:00 UTC vouches for event {seq}, but the chain "
        "ends at event 8: the newest events were deleted"
        for seq in (14, newest.seq)
    ]
