"""Read-only questions the web console asks beyond status and history: one soak with its
cycles, and the audit log filtered and paged by keyset."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.errors import BadInput, NotFound
from promptship.services.deps import Deps
from promptship.services.queries import event_view, soak_view
from promptship.services.soaks import CLAIMED
from promptship.services.views import AuditEventView, AuditPage, SoakCycleView, SoakDetail
from promptship.store.models import (
    AuditEvent,
    JobClaim,
    OutboxChannelLease,
    Prompt,
    PromptVersion,
    SoakCycle,
    SoakRun,
    ValidationRun,
)


async def soak_detail(session: AsyncSession, deps: Deps, soak_id: int) -> SoakDetail:
    """One soak with its settled cycles (those still claimed are left out): their states,
    divergence and worst pairs."""
    row = (
        await session.execute(
            select(SoakRun, Prompt.name, PromptVersion.version)
            .join(PromptVersion, PromptVersion.id == SoakRun.version_id)
            .join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(SoakRun.id == soak_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no soak {soak_id}")
    soak, name, version = row
    cycles = (
        await session.scalars(
            select(SoakCycle)
            .where(SoakCycle.soak_id == soak_id, SoakCycle.state != CLAIMED)
            .order_by(SoakCycle.cycle)
        )
    ).all()
    return SoakDetail(
        prompt=name,
        soak=soak_view(deps, soak, name, version, deps.clock.now()),
        max_divergence=deps.policy.environments.production_policy.max_divergence,
        cycles=[
            SoakCycleView(
                cycle=c.cycle,
                state=c.state,
                finished_at=c.finished_at,
                sample_size=c.sample_size,
                divergent=c.divergent,
                errored=c.errored,
                rate=c.rate,
                error=(c.details or {}).get("error"),
                worst=list((c.details or {}).get("worst") or []),
            )
            for c in cycles
        ],
    )


#: audit events per page
AUDIT_PAGE = 100
#: the most events one export streams (narrow the filters for more)
EXPORT_MAX = 50_000
#: the longest filter value taken
MAX_FILTER = 255


@dataclass(frozen=True)
class AuditFilter:
    """Which audit events to show: each given field narrows the rows (exact matches;
    ``since`` inclusive, ``until`` exclusive)."""

    prompt: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("prompt", "actor", "action"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_FILTER:
                raise BadInput(f"the {name} filter is over {MAX_FILTER} characters")

    def where(self, query: Select[Any]) -> Select[Any]:
        if self.prompt:
            query = query.where(AuditEvent.prompt == self.prompt)
        if self.actor:
            query = query.where(AuditEvent.actor == self.actor)
        if self.action:
            query = query.where(AuditEvent.action == self.action)
        if self.since is not None:
            query = query.where(AuditEvent.at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.at < self.until)
        return query


async def audit_page(
    session: AsyncSession, found: AuditFilter, before: int | None = None, limit: int = AUDIT_PAGE
) -> AuditPage:
    """The matching events, newest first, a page at a time (keyset on ``seq``: pass
    ``next_before`` as ``before`` for the next, older page)."""
    limit = max(1, min(limit, AUDIT_PAGE))
    query = found.where(select(AuditEvent))
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = (await session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1))).all()
    events = [event_view(e) for e in rows[:limit]]
    return AuditPage(events=events, next_before=events[-1].seq if len(rows) > limit else None)


async def audit_lines(
    session: AsyncSession, found: AuditFilter, batch: int = 1000
) -> AsyncIterator[str]:
    """The matching events as JSON lines, newest first, read a batch at a time by keyset;
    at most :data:`EXPORT_MAX`, then a last line saying the export stopped there."""
    before: int | None = None
    sent = 0
    while sent < EXPORT_MAX:
        query = found.where(select(AuditEvent))
        if before is not None:
            query = query.where(AuditEvent.seq < before)
        size = min(batch, EXPORT_MAX - sent)
        rows = (await session.scalars(query.order_by(AuditEvent.seq.desc()).limit(size))).all()
        if not rows:
            return
        yield "".join(event_view(e).model_dump_json() + "\n" for e in rows)
        sent += len(rows)
        before = rows[-1].seq
        if len(rows) < size:
            return
    yield json.dumps({"truncated": f"stopped after {EXPORT_MAX} events: narrow the filters"})
    yield "\n"


async def request_events(
    session: AsyncSession, request_id: int, limit: int = 200
) -> list[AuditEventView]:
    """What happened to a request, oldest first (the first ``limit`` events)."""
    rows = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.request_id == request_id)
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return [event_view(e) for e in rows.all()]


@dataclass(frozen=True)
class Replica:
    name: str
    last_seen: datetime
    doing: str


async def replicas_seen(session: AsyncSession, since: datetime, limit: int = 50) -> list[Replica]:
    """The replicas that claimed work since ``since`` (scheduled ticks, soak cycles,
    validation runs, a channel's notifications), each with when and what it last did."""
    sources: list[tuple[str, Any, Any]] = [
        ("a scheduled job", JobClaim.owner, JobClaim.claimed_at),
        ("a soak cycle", SoakCycle.owner, SoakCycle.claimed_at),
        ("a validation run", ValidationRun.owner, ValidationRun.heartbeat_at),
        ("notifications", OutboxChannelLease.leased_by, OutboxChannelLease.lease_until),
    ]
    seen: dict[str, Replica] = {}
    for doing, owner, at in sources:
        rows = await session.execute(
            select(owner, func.max(at))
            .where(owner.is_not(None), at >= since)
            .group_by(owner)
            .limit(limit)
        )
        for name, last in rows.all():
            if last is not None and (name not in seen or seen[name].last_seen < last):
                seen[name] = Replica(name, last, doing)
    return sorted(seen.values(), key=lambda r: r.last_seen, reverse=True)[:limit]


@dataclass(frozen=True)
class JobRun:
    key: str
    owner: str
    claimed_at: datetime
    done_at: datetime | None


async def recent_jobs(session: AsyncSession, limit: int = 10) -> list[JobClaim]:
    """The scheduler's latest claimed ticks (the drift watch, checkpoints), newest first."""
    rows = await session.scalars(select(JobClaim).order_by(JobClaim.claimed_at.desc()).limit(limit))
    return list(rows.all())
