"""A soak cycle's sampled traffic, read a page at a time: the window is fixed when the
cycle's spec is read (how many queries, and none newer than the newest then), and each page
is one short read by keyset on (logged at, id), newest first. A cycle of 10,000 queries
never holds them all, nor a transaction open while it calls the model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.services.soak_spec import Sample, SampleCursor, TrafficWindow
from promptship.store.models import TrafficSample

#: samples one page reads
PAGE = 500


def _in_window(window: TrafficWindow) -> Select[TrafficSample]:
    query = select(TrafficSample).where(
        TrafficSample.prompt_id == window.prompt_id,
        TrafficSample.environment == window.environment,
        TrafficSample.id <= window.upto_id,
    )
    if window.since is not None:
        query = query.where(TrafficSample.at >= window.since)
    return query


async def window(
    session: AsyncSession,
    prompt_id: int,
    environment: str,
    since: datetime | None,
    limit: int,
) -> TrafficWindow:
    """The newest ``limit`` queries logged for the prompt in ``environment`` (from ``since``),
    as they stand now: their count, and the newest id a page may read."""
    newest = select(func.max(TrafficSample.id)).where(
        TrafficSample.prompt_id == prompt_id, TrafficSample.environment == environment
    )
    upto = (await session.scalar(newest)) or 0
    found = TrafficWindow(prompt_id, environment, since, upto, 0)
    capped = _in_window(found).with_only_columns(TrafficSample.id).limit(limit).subquery()
    size = (await session.scalar(select(func.count()).select_from(capped))) or 0
    return TrafficWindow(prompt_id, environment, since, upto, size)


async def page(
    session: AsyncSession,
    found: TrafficWindow,
    after: SampleCursor | None,
    taken: int,
    limit: int = PAGE,
) -> tuple[list[Sample], SampleCursor | None]:
    """The next page of the window after ``after`` (``taken`` samples read so far), and the
    cursor of the page after it (None once the window is read)."""
    wanted = min(limit, found.size - taken)
    if wanted <= 0:
        return [], None
    query = _in_window(found)
    if after is not None:
        query = query.where(
            or_(
                TrafficSample.at < after.at,
                and_(TrafficSample.at == after.at, TrafficSample.id < after.id),
            )
        )
    rows = (
        await session.scalars(
            query.order_by(TrafficSample.at.desc(), TrafficSample.id.desc()).limit(wanted)
        )
    ).all()
    samples = [Sample(r.input, r.output, r.version, r.vars) for r in rows]
    done = not rows or taken + len(rows) >= found.size
    return samples, None if done else SampleCursor(rows[-1].at, rows[-1].id)
