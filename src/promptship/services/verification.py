"""``verify``: recompute the audit chain, compare it with signed checkpoints, and
cross-check the tables the gates read against it. ``verify_tail``: the same checks over
the events since the newest signed checkpoint only, cheap enough for a page load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.auditkeys import ENV_VAR, AuditKeys
from promptship.services import audit, audit_checks
from promptship.services import checkpoints as cps
from promptship.store.models import AuditEvent, AuditHead

#: the most events ``verify_tail`` reads (past the newest checkpoint) before it says so
MAX_TAIL = 500


class _Walk:
    """The chain checked one event at a time, in order, from event ``first_seq`` whose
    predecessor's hash is ``prev``; problems go to ``result``."""

    def __init__(
        self,
        result: audit.Verification,
        keys: AuditKeys | None,
        anchors: dict[int, list[cps.Checkpoint]],
        first_seq: int = 1,
        prev: str = audit.GENESIS,
    ) -> None:
        self.result, self.keys, self.anchors = result, keys, anchors
        self.expected_seq, self.prev = first_seq, prev
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
    """Recompute the chain and compare it with the stored checkpoints and those given (from
    a file or the channel); then cross-check approvals, deployments and closed requests
    against their events. Problems are plain sentences, the first few of each kind."""
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
    for problem in await audit_checks.cross_check(session):
        if not result.add(problem):
            break
    return result


@dataclass
class TailCheck:
    """What ``verify_tail`` found. ``state``: ``verified`` (the newest checkpoint is genuine
    and matches the chain, and every event after it follows and is signed), ``failed`` (see
    ``problems``), or ``unchecked`` (no checkpoint yet, or more than ``MAX_TAIL`` events
    since the newest: ``promptship audit verify`` checks the whole chain)."""

    state: str
    head: int  # events in the log
    checkpoint: cps.Checkpoint | None = None
    checked: int = 0  # events read past the checkpoint (or from the start)
    problems: list[str] = field(default_factory=list)


async def verify_tail(session: AsyncSession, limit: int = MAX_TAIL) -> TailCheck:
    """Check the chain from the newest signed checkpoint to its head (the whole chain when
    it is no longer than ``limit`` and has no checkpoint): the same checks as ``verify``
    over at most ``limit`` events."""
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    newest = await cps.stored(session, limit=1)
    checkpoint = newest[-1] if newest else None
    start = checkpoint.seq if checkpoint is not None else 1
    if head.seq - start + 1 > limit:
        return TailCheck("unchecked", head.seq, checkpoint)
    result = audit.Verification()
    keys = audit.keyring(session).keys()
    prev = audit.GENESIS
    if checkpoint is not None:
        anchors = cps.usable([checkpoint], keys, result)
        if not anchors:
            return TailCheck("failed", head.seq, checkpoint, 0, result.problems)
        anchored = await session.scalar(select(AuditEvent).where(AuditEvent.seq == start))
        if anchored is None:
            result.add(
                f"the checkpoint made {checkpoint.when} vouches for event {start}, which is "
                "no longer in the log: events were deleted"
            )
            return TailCheck("failed", head.seq, checkpoint, 0, result.problems)
        prev = anchored.prev_hash  # the checkpoint vouches for the event, not what came before
    else:
        anchors = {}
    walk = _Walk(result, keys, anchors, start, prev)
    events = await session.scalars(
        select(AuditEvent).where(AuditEvent.seq >= start).order_by(AuditEvent.seq).limit(limit)
    )
    for event in events.all():
        walk.step(event)
    await walk.end(session)
    state = "verified" if result.ok else "failed"
    return TailCheck(state, head.seq, checkpoint, result.checked, result.problems)
