"""The audit log's keyed hash chain finds every kind of tampering, on both stores, even by
someone who recomputes the hashes; export keeps every field; keys rotate."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable

from sqlalchemy import select, text

from promptship.auditkeys import AuditKey, parse_keys
from promptship.clock import ManualClock
from promptship.config import Policy
from promptship.services import Promptship, audit
from promptship.store.db import Database
from promptship.store.models import AuditEvent, AuditHead
from tests.conftest import TEST_AUDIT_KEY, _truncate
from tests.helpers import push, slack, to_production, to_staging

OLD_KEY = "k1:" + "o" * 40
NEW_KEY = "k2:" + "n" * 40


async def build_history(core: Promptship) -> int:
    await push(core)
    await to_production(core)
    await push(core, version="1.1.0", system_prompt="Be brief.")
    await to_staging(core, version="1.1.0")
    await core.rollback("customer-support", "staging", slack("U03"))
    verification = await core.verify_audit()
    assert verification.ok, verification.problems
    return verification.checked


async def tamper(core: Promptship, sql: str, **params: object) -> list[str]:
    async with core.db.engine.begin() as conn:
        await conn.execute(text(sql), params)
    return (await core.verify_audit()).problems


async def test_an_untouched_log_verifies(core: Promptship) -> None:
    events = await build_history(core)
    assert events >= 10


async def test_an_edited_field_is_found(core: Promptship) -> None:
    await build_history(core)
    problems = await tamper(core, "UPDATE audit_events SET actor = 'U66' WHERE seq = 4")
    assert problems == ["event 4 was edited: its content no longer matches its hash"]


async def test_edited_details_are_found(core: Promptship) -> None:
    await build_history(core)
    async with core.db.reader() as session:
        details = (
            await session.execute(text("SELECT details FROM audit_events WHERE seq = 3"))
        ).scalar_one()
    if isinstance(details, str):
        details = json.loads(details)
    details["forged"] = True
    problems = await tamper(
        core, "UPDATE audit_events SET details = :d WHERE seq = 3", d=json.dumps(details)
    )
    assert "event 3 was edited" in problems[0]


async def test_rewriting_a_hash_to_cover_an_edit_breaks_the_next_link(core: Promptship) -> None:
    await build_history(core)
    problems = await tamper(core, "UPDATE audit_events SET hash = :h WHERE seq = 5", h="f" * 64)
    assert "event 5 was edited" in problems[0]
    assert "event 6 does not follow the event before it" in problems


async def test_a_deleted_middle_event_is_found(core: Promptship) -> None:
    await build_history(core)
    problems = await tamper(core, "DELETE FROM audit_events WHERE seq = 5")
    assert problems[0] == "events 5..5 are missing (deleted?)"
    assert "event 6 does not follow the event before it" in problems


async def test_deleted_newest_events_are_found(core: Promptship) -> None:
    total = await build_history(core)
    problems = await tamper(core, "DELETE FROM audit_events WHERE seq > :n", n=total - 2)
    assert problems[0] == (
        f"the chain ends at event {total - 2} but the log recorded {total} events "
        "(the newest events were deleted)"
    )


async def test_the_chain_keeps_growing_after_verification(core: Promptship) -> None:
    before = await build_history(core)
    await push(core, version="1.2.0", system_prompt="Be kind.")
    await to_staging(core, version="1.2.0")
    after = await core.verify_audit()
    assert after.ok and after.checked > before


async def test_export_in_jsonl_and_csv_carries_the_chain(core: Promptship) -> None:
    total = await build_history(core)
    jsonl = "".join([chunk async for chunk in core.export_audit("jsonl")])
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, total + 1))
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(rows))
    assert {"deployment.changed", "request.approved", "version.registered"} <= {
        r["action"] for r in rows
    }
    csv_text = "".join([chunk async for chunk in core.export_audit("csv")])
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(parsed) == total
    assert parsed[0]["action"] == rows[0]["action"]
    assert json.loads(parsed[-1]["details"]) == rows[-1]["details"]


async def rechain(
    core: Promptship, start: int, key_for: Callable[[int], AuditKey | None], **edit: object
) -> None:
    """What an attacker with database access can do: edit event ``start`` and recompute its
    hash and every later one (and ``audit_head``) with the key ``key_for`` gives per seq."""
    async with core.db.transaction() as session:
        prev = (
            await session.execute(select(AuditEvent.hash).where(AuditEvent.seq == start - 1))
        ).scalar_one_or_none() or audit.GENESIS
        events = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.seq >= start).order_by(AuditEvent.seq)
            )
        ).scalars()
        for event in events:
            if event.seq == start:
                for name, value in edit.items():
                    setattr(event, name, value)
            key = key_for(event.seq)
            event.key_id = key.id if key else None
            event.prev_hash = prev
            event.hash = prev = audit.stored_hash(event, key)
        head = (await session.execute(select(AuditHead))).scalar_one()
        head.hash = prev


async def test_an_edit_with_every_later_hash_recomputed_in_sha256_is_found(
    core: Promptship,
) -> None:
    await build_history(core)
    # the public hash function, the key id left in place
    await rechain(core, 4, lambda seq: None, actor="U66")
    async with core.db.transaction() as session:
        await session.execute(text("UPDATE audit_events SET key_id = 'test' WHERE seq >= 4"))
    problems = (await core.verify_audit()).problems
    assert problems[0] == "event 4 was edited: its content no longer matches its hash"


async def test_an_edit_rechained_as_unkeyed_events_is_found(core: Promptship) -> None:
    await build_history(core)
    await rechain(core, 4, lambda seq: None, actor="U66")
    problems = (await core.verify_audit()).problems
    assert problems[0] == (
        "event 4 is not signed although event 1 before it was: it was written around the key "
        "(tampering)"
    )


async def test_an_edit_rechained_under_a_guessed_key_is_found(core: Promptship) -> None:
    await build_history(core)
    guessed = parse_keys("test:" + "g" * 40).signer  # the right id, the wrong secret
    await rechain(core, 4, lambda seq: guessed, actor="U66")
    problems = (await core.verify_audit()).problems
    assert problems[0] == "event 4 was edited: its content no longer matches its hash"
    assert len(problems) >= 2  # every later event fails too


async def test_events_from_before_keyed_audit_verify_as_sha256(core: Promptship) -> None:
    total = await build_history(core)
    keyed = parse_keys(TEST_AUDIT_KEY).signer
    # as if the first five events had been written before migration 0007
    await rechain(core, 1, lambda seq: None if seq <= 5 else keyed)
    # the checkpoint signed after the production promotion saw the chain as it was
    (checkpoint,) = await core.audit_checkpoints()
    assert (await core.verify_audit()).problems == [
        f"event {checkpoint.seq} differs from the checkpoint made 2026-01-01 09:00:00 UTC: "
        "the log was rewritten since"
    ]
    await tamper(core, "DELETE FROM audit_checkpoints")
    result = await core.verify_audit()
    assert result.ok and result.unkeyed == 5 and result.checked == total


async def test_rotation_keeps_old_events_verifiable_while_the_old_key_is_listed(
    database_url: str, clock: ManualClock, policy: Policy
) -> None:
    async def core_with(keys: str) -> Promptship:
        return Promptship(Database(database_url, audit_keys=keys), policy, clock)

    before = await core_with(OLD_KEY)
    if before.db.dialect == "postgresql":
        await _truncate(before.db)
    await push(before)
    old_checkpoint = await before.checkpoint_audit()
    await before.db.dispose()

    rotated = await core_with(f"{NEW_KEY},{OLD_KEY}")  # the new key first: it signs
    await push(rotated, version="1.1.0", system_prompt="Be brief.")
    result = await rotated.verify_audit()
    assert result.ok, result.problems
    assert old_checkpoint is not None and result.newest_checkpoint == old_checkpoint.seq
    async with rotated.db.reader() as session:
        ids = (await session.execute(select(AuditEvent.key_id).order_by(AuditEvent.seq))).all()
    assert [i for (i,) in ids] == ["k1", "k2"]
    await rotated.db.dispose()

    dropped = await core_with(NEW_KEY)  # the old key no longer listed
    problems = (await dropped.verify_audit()).problems
    await dropped.db.dispose()
    assert problems == [
        "the checkpoint of event 1 made 2026-01-01 09:00:00 UTC was signed with key 'k1', "
        "which PROMPTSHIP_AUDIT_KEY does not list: add it to check this checkpoint",
        "event 1 and others were signed with key 'k1', which PROMPTSHIP_AUDIT_KEY does not "
        "list: add it to verify them",
    ]
