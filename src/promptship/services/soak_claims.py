"""Claims on soak cycles: the keyed insert that makes a due cycle run once across replicas,
the lease that lets another replica take a dead one's cycle over, the cap on how often a
cycle is started before it is recorded as errored, and the hand-back of a cycle cut short
by a planned shutdown (which does not count against that cap)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.services import registry
from promptship.services.deps import Deps
from promptship.services.soak_spec import CycleResult
from promptship.services.soaks import CLAIMED, cycle_spec, finish
from promptship.store.models import SoakCycle, SoakRun

#: a cycle is started at most this often (each start repeats its model calls); then it is
#: recorded as errored, which fails the soak, instead of being retried without end
MAX_CYCLE_ATTEMPTS = 3


def _ours(soak_id: int, cycle: int, owner: str) -> tuple[ColumnElement[bool], ...]:
    """The cycle, while ``owner`` holds its claim."""
    return (
        SoakCycle.soak_id == soak_id,
        SoakCycle.cycle == cycle,
        SoakCycle.state == CLAIMED,
        SoakCycle.owner == owner,
    )


async def claim(
    session: AsyncSession, deps: Deps, soak_id: int, cycle: int, owner: str, lease: timedelta
) -> bool:
    """Claim cycle ``cycle`` of a soak for ``owner``: True if it is now ours to run."""
    if await session.scalar(select(SoakRun.state).where(SoakRun.id == soak_id)) != "running":
        return False  # it ended (failed, passed, cancelled) since the tick was planned
    now = deps.clock.now()
    insert = registry.dialect_insert(session)
    inserted = await session.execute(
        insert(SoakCycle)
        .values(
            soak_id=soak_id,
            cycle=cycle,
            state=CLAIMED,
            owner=owner,
            lease_until=now + lease,
            claimed_at=now,
            attempts=1,
            details={},
        )
        .on_conflict_do_nothing(index_elements=["soak_id", "cycle"])
    )
    if inserted.rowcount == 1:  # type: ignore[attr-defined]
        return True
    taken = await session.execute(
        update(SoakCycle)
        .where(
            SoakCycle.soak_id == soak_id,
            SoakCycle.cycle == cycle,
            SoakCycle.state == CLAIMED,
            SoakCycle.lease_until < now,
            SoakCycle.attempts < MAX_CYCLE_ATTEMPTS,
        )
        .values(owner=owner, lease_until=now + lease, attempts=SoakCycle.attempts + 1)
    )
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        return True
    spent = await session.scalar(
        select(SoakCycle).where(
            SoakCycle.soak_id == soak_id,
            SoakCycle.cycle == cycle,
            SoakCycle.state == CLAIMED,
            SoakCycle.lease_until < now,
        )
    )
    if spent is not None:  # every attempt was started and none finished: the soak decides
        await _give_up(session, deps, spent, owner)
    return False


async def fail_attempt(
    session: AsyncSession, deps: Deps, soak_id: int, cycle: int, owner: str, error: str
) -> str | None:
    """Our attempt at a cycle raised ``error``: free the cycle for the next attempt, or,
    after :data:`MAX_CYCLE_ATTEMPTS`, record it as errored (the soak fails and people are
    told). Returns the cycle's state when it was recorded, else None."""
    row = await session.scalar(select(SoakCycle).where(*_ours(soak_id, cycle, owner)))
    if row is None:
        return None  # recorded or taken over meanwhile
    row.details = {**row.details, "last_error": error[:500]}
    if row.attempts >= MAX_CYCLE_ATTEMPTS:
        return await _give_up(session, deps, row, owner)
    row.lease_until = deps.clock.now()  # the next reconcile tries again at once
    await session.flush()
    return None


async def hand_back(
    session: AsyncSession, deps: Deps, soak_id: int, cycle: int, owner: str
) -> bool:
    """Our replica is shutting down (planned) mid-cycle: give the cycle back without using one
    of its attempts, and let another replica take it at once rather than after our lease.
    A crash hands nothing back: its lease runs out and the takeover counts. False if the
    cycle was recorded or taken over meanwhile."""
    handed = await session.execute(
        update(SoakCycle)
        .where(*_ours(soak_id, cycle, owner))
        # (a lease already over: ``claim`` takes over only leases that ended before now)
        .values(
            attempts=SoakCycle.attempts - 1,
            lease_until=deps.clock.now() - timedelta(seconds=1),
        )
    )
    return bool(handed.rowcount == 1)  # type: ignore[attr-defined]


async def _give_up(session: AsyncSession, deps: Deps, row: SoakCycle, owner: str) -> str | None:
    """Record a cycle that used up its attempts as errored, with why."""
    last = row.details.get("last_error")
    why = (
        f"gave up after {row.attempts} attempts; the last failed: {last}"
        if last
        else f"gave up after {row.attempts} attempts: the replica running it stopped each time"
    )
    spec = await cycle_spec(session, deps, row.soak_id, row.cycle)
    return await finish(session, deps, spec, owner, CycleResult(sample_size=0, error=why))


async def renew(
    session: AsyncSession, deps: Deps, soak_id: int, cycle: int, owner: str, lease: timedelta
) -> bool:
    """Extend our lease while a long cycle runs; False if someone took it over."""
    renewed = await session.execute(
        update(SoakCycle)
        .where(*_ours(soak_id, cycle, owner))
        .values(lease_until=deps.clock.now() + lease)
    )
    return bool(renewed.rowcount == 1)  # type: ignore[attr-defined]
