"""The audit log's hash chain finds every kind of tampering, on both stores; export keeps
every field."""

from __future__ import annotations

import csv
import io
import itertools
import json

from sqlalchemy import text

from promptship.services import Promptship
from tests.helpers import push, slack, to_production, to_staging


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
    assert problems == [
        f"the chain ends at event {total - 2} but the log recorded {total} events "
        "(the newest events were deleted)"
    ]


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
