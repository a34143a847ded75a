"""The console's check of the chain's tail, on both stores: from the newest signed
checkpoint to the head, the same checks ``audit verify`` makes, bounded for a page load."""

from __future__ import annotations

from sqlalchemy import text

from promptship.services import Promptship
from promptship.services.verification import TailCheck, verify_tail
from tests.helpers import push, to_staging


async def build(core: Promptship) -> int:
    """A few events, a checkpoint at the head, three more events: the checkpoint's seq."""
    await push(core)
    await to_staging(core)
    checkpoint = await core.checkpoint_audit("test")
    assert checkpoint is not None
    await push(core, version="1.1.0", system_prompt="Be brief.")
    await to_staging(core, version="1.1.0")
    return checkpoint.seq


async def tail(core: Promptship, sql: str = "", limit: int = 500) -> TailCheck:
    if sql:
        async with core.db.engine.begin() as conn:
            await conn.execute(text(sql))
    async with core.db.reader() as session:
        return await verify_tail(session, limit)


async def test_an_untouched_tail_verifies_from_the_newest_checkpoint(core: Promptship) -> None:
    at = await build(core)
    found = await core.verify_audit_tail()
    assert found.state == "verified", found.problems
    assert found.checkpoint is not None and found.checkpoint.seq == at
    assert found.checked == found.head - at + 1 and found.head > at


async def test_without_a_checkpoint_a_short_chain_is_checked_whole(core: Promptship) -> None:
    await push(core)
    found = await tail(core)
    assert (found.state, found.checkpoint, found.checked) == ("verified", None, found.head)
    assert found.head >= 1


async def test_an_edit_after_the_checkpoint_fails_the_tail(core: Promptship) -> None:
    at = await build(core)
    found = await tail(core, f"UPDATE audit_events SET actor = 'U66' WHERE seq = {at + 2}")
    assert found.state == "failed"
    assert found.problems == [f"event {at + 2} was edited: its content no longer matches its hash"]


async def test_a_rewritten_checkpoint_event_or_a_forged_checkpoint_fails(core: Promptship) -> None:
    at = await build(core)
    found = await tail(core, f"UPDATE audit_events SET hash = prev_hash WHERE seq = {at}")
    assert found.state == "failed" and any(
        "differs from the checkpoint" in p for p in found.problems
    )
    forged = await tail(core, "UPDATE audit_checkpoints SET mac = hash")
    assert forged.state == "failed" and "forged" in forged.problems[0]


async def test_a_deleted_checkpoint_event_fails(core: Promptship) -> None:
    at = await build(core)
    found = await tail(core, f"DELETE FROM audit_events WHERE seq = {at}")
    assert found.state == "failed" and "no longer in the log" in found.problems[0]


async def test_a_long_tail_is_left_to_audit_verify(core: Promptship) -> None:
    at = await build(core)
    found = await tail(core, limit=2)
    assert (found.state, found.checked) == ("unchecked", 0)
    assert found.checkpoint is not None and found.checkpoint.seq == at
    assert (await core.verify_audit()).ok
