"""The reference walk of the audit chain: ORM objects, one event at a time, as ``audit
verify`` checked the chain before ``chainscan``. Plain and slow (about 20,000 events/s);
the tests hold the fast scan to its findings, and ``benchmarks/store.py`` measures the fast
scan against it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import ENV_VAR, AuditKeys
from promptship.services import audit, audit_checks
from promptship.services import checkpoints as cps
from promptship.store.models import AuditEvent, AuditHead


class _Walk:
    """The chain checked one event at a time, in order, from event 1; problems go to
    ``result``."""

    def __init__(
        self,
        result: audit.Verification,
        keys: AuditKeys | None,
        anchors: dict[int, list[cps.Checkpoint]],
    ) -> None:
        self.result, self.keys, self.anchors = result, keys, anchors
        self.expected_seq, self.prev = 1, audit.GENESIS
        self.keyed_since: int | None = None
        self.missing_keys: set[str] = set()

    @property
    def last(self) -> int:
        return self.expected_seq - 1

    def step(self, event: AuditEvent) -> None:
        result = self.result
        result.checked += 1
        if len(result.problems) >= audit.MAX_PROBLEMS:
            return  # count the rest, report no more
        if event.seq != self.expected_seq:
            result.add(
                f"events {self.expected_seq}..{event.seq - 1} are missing (deleted?)"
                if event.seq > self.expected_seq
                else f"event {event.seq} is out of order"
            )
        if event.prev_hash != self.prev:
            result.add(f"event {event.seq} does not follow the event before it")
        if event.key_id is None:
            result.unkeyed += 1
            if self.keyed_since is not None:
                result.add(
                    f"event {event.seq} is not signed although event {self.keyed_since} "
                    "before it was: it was written around the key (tampering)"
                )
            elif audit.stored_hash(event, None) != event.hash:
                result.add(f"event {event.seq} was edited: its content no longer matches its hash")
        else:
            self.keyed_since = self.keyed_since or event.seq
            key = self.keys.get(event.key_id) if self.keys else None
            if key is None:
                if event.key_id not in self.missing_keys:
                    self.missing_keys.add(event.key_id)
                    result.add(
                        f"event {event.seq} and others were signed with key {event.key_id!r}, "
                        f"which {ENV_VAR} does not list: add it to verify them"
                    )
            elif audit.stored_hash(event, key) != event.hash:
                result.add(f"event {event.seq} was edited: its content no longer matches its hash")
        for anchor in self.anchors.pop(event.seq, ()):
            if anchor.hash != event.hash:
                result.add(
                    f"event {event.seq} differs from the checkpoint made {anchor.when}: "
                    "the log was rewritten since"
                )
        self.expected_seq, self.prev = event.seq + 1, event.hash

    async def end(self, session: AsyncSession) -> None:
        """The checkpoints past the last event, and the log's head, against the chain."""
        for seq in sorted(self.anchors):
            anchor = self.anchors[seq][0]
            self.result.add(
                f"the checkpoint made {anchor.when} vouches for event {seq}, but the chain ends "
                f"at event {self.last}: the newest events were deleted"
            )
        head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
        if head.seq != self.last or head.hash != self.prev:
            self.result.add(
                f"the chain ends at event {self.last} but the log recorded {head.seq} events "
                "(the newest events were deleted)"
            )


async def verify(
    session: AsyncSession, checkpoints: Sequence[cps.Checkpoint] = (), batch: int = 5000
) -> audit.Verification:
    """The whole chain walked as ORM objects, then the cross-checks: what
    ``verification.verify`` finds over the whole chain, found the slow way."""
    result = audit.Verification()
    keys = audit.keyring(session).keys()
    known = await cps.stored(session)
    walk = _Walk(result, keys, cps.usable(cps.merge(known, checkpoints), keys, result))
    stream = await session.stream_scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch)
    )
    async for event in stream:
        walk.step(event)
    await walk.end(session)
    result.end = walk.last
    for problem in await audit_checks.cross_check(session):
        if not result.add(problem):
            break
    return result
