"""``verify``: recompute the audit chain, compare it with signed checkpoints, and
cross-check the tables the gates read against it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import ENV_VAR
from promptship.services import audit, audit_checks
from promptship.services import checkpoints as cps
from promptship.store.models import AuditEvent, AuditHead


async def verify(
    session: AsyncSession, checkpoints: Sequence[cps.Checkpoint] = (), batch: int = 5000
) -> audit.Verification:
    """Recompute the chain and compare it with the stored checkpoints and those given (from
    a file or the channel); then cross-check approvals, deployments and closed requests
    against their events. Problems are plain sentences, the first few of each kind."""
    result = audit.Verification()
    keys = audit.keyring(session).keys()
    known = await cps.stored(session)
    anchors = cps.usable(cps.merge(known, checkpoints), keys, result)
    expected_seq, prev = 1, audit.GENESIS
    keyed_since: int | None = None
    missing_keys: set[str] = set()
    stream = await session.stream_scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    )
    async for event in stream:
        result.checked += 1
        if len(result.problems) >= audit.MAX_PROBLEMS:
            continue  # count the rest, report no more
        if event.seq != expected_seq:
            result.add(
                f"events {expected_seq}..{event.seq - 1} are missing (deleted?)"
                if event.seq > expected_seq
                else f"event {event.seq} is out of order"
            )
        if event.prev_hash != prev:
            result.add(f"event {event.seq} does not follow the event before it")
        if event.key_id is None:
            result.unkeyed += 1
            if keyed_since is not None:
                result.add(
                    f"event {event.seq} is not signed although event {keyed_since} before it "
                    "was: it was written around the key (tampering)"
                )
            elif audit.stored_hash(event, None) != event.hash:
                result.add(f"event {event.seq} was edited: its content no longer matches its hash")
        else:
            keyed_since = keyed_since or event.seq
            key = keys.get(event.key_id) if keys else None
            if key is None:
                if event.key_id not in missing_keys:
                    missing_keys.add(event.key_id)
                    result.add(
                        f"event {event.seq} and others were signed with key {event.key_id!r}, "
                        f"which {ENV_VAR} does not list: add it to verify them"
                    )
            elif audit.stored_hash(event, key) != event.hash:
                result.add(f"event {event.seq} was edited: its content no longer matches its hash")
        for anchor in anchors.pop(event.seq, ()):
            if anchor.hash != event.hash:
                result.add(
                    f"event {event.seq} differs from the checkpoint made {anchor.when}: "
                    "the log was rewritten since"
                )
        expected_seq, prev = event.seq + 1, event.hash
    last = expected_seq - 1
    for seq in sorted(anchors):
        anchor = anchors[seq][0]
        result.add(
            f"the checkpoint made {anchor.when} vouches for event {seq}, but the chain ends at "
            f"event {last}: the newest events were deleted"
        )
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    if head.seq != last or head.hash != prev:
        result.add(
            f"the chain ends at event {last} but the log recorded {head.seq} events "
            "(the newest events were deleted)"
        )
    for problem in await audit_checks.cross_check(session):
        if not result.add(problem):
            break
    return result
