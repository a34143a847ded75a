"""The console's overview as a bounded read: a page of prompts (by name, optionally
filtered), the open requests with their gate checklists and the running soaks. A store of
10,000 prompts costs what a store of 50 does: the prompts are paged by keyset on the name,
and each part is a handful of queries, never one per prompt."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import RequestState
from promptship.services import gates
from promptship.services.deps import Deps, request_code
from promptship.services.queries import soak_view, statuses
from promptship.services.soaks import running_rows
from promptship.services.views import PromptStatus, RequestView, SoakView
from promptship.store.models import PromotionRequest, Prompt, PromptVersion

#: prompts on one page of the overview
PAGE = 50
#: open requests shown with their gate checklists, oldest first (each costs a dozen reads:
#: the gates check the request against its signed events)
MAX_CHECKED = 10
#: open requests listed in all (past ``MAX_CHECKED``, a line each); the rest are counted
MAX_REQUESTS = 200
#: the longest name filter read (a prompt name is at most 64 characters)
MAX_QUERY = 100


@dataclass(frozen=True)
class OpenRequest:
    id: int
    code: str
    prompt: str
    version: str
    environment: str
    requester: str
    created_at: datetime


@dataclass(frozen=True)
class OverviewPage:
    query: str  # the name filter as applied (trimmed and bounded): '' for none
    prompts: list[PromptStatus]
    descriptions: dict[str, str | None]
    matching: int  # prompts the filter matches (all prompts without one)
    before: int  # matching prompts before this page
    next_after: str | None  # the name to page on from, if more follow
    requests: list[RequestView]  # the oldest open requests, with their gate checklists
    more_requests: list[OpenRequest]  # the next ones, a line each
    open_requests: int  # how many are open in all
    soaks: list[tuple[str, SoakView]]


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def overview_page(
    session: AsyncSession,
    deps: Deps,
    query: str = "",
    after: str | None = None,
    limit: int = PAGE,
) -> OverviewPage:
    """Prompts whose name holds ``query`` (any case), from the one after ``after``."""
    query = query.strip()[:MAX_QUERY]
    match = Prompt.name.ilike(_like(query), escape="\\") if query else None
    counted = select(func.count()).select_from(Prompt)
    listed = select(Prompt).order_by(Prompt.name).limit(limit + 1)
    if match is not None:
        counted = counted.where(match)
        listed = listed.where(match)
    matching = (await session.scalar(counted)) or 0
    before = 0
    if after is not None:
        listed = listed.where(Prompt.name > after)
        before = (await session.scalar(counted.where(Prompt.name <= after))) or 0
    rows = list((await session.scalars(listed)).all())
    page = rows[:limit]
    shown = await statuses(session, deps, page, with_requests=False)
    described = await _descriptions(session, page, shown)
    requests, more, open_requests = await _open_requests(session, deps)
    return OverviewPage(
        query=query,
        prompts=shown,
        descriptions=described,
        matching=matching,
        before=before,
        next_after=page[-1].name if len(rows) > limit else None,
        requests=requests,
        more_requests=more,
        open_requests=open_requests,
        soaks=await _running_soaks(session, deps),
    )


async def _descriptions(
    session: AsyncSession, prompts: list[Prompt], shown: list[PromptStatus]
) -> dict[str, str | None]:
    """Each prompt's description: its latest version's (the one the row names), one query."""
    latest = [(p.id, s.latest_version) for p, s in zip(prompts, shown, strict=True)]
    wanted = [pair for pair in latest if pair[1] is not None]
    if not wanted:
        return {}
    names = {p.id: p.name for p in prompts}
    pairs = [and_(PromptVersion.prompt_id == pid, PromptVersion.version == v) for pid, v in wanted]
    rows = await session.execute(  # each pair a lookup in the (prompt_id, version) index
        select(PromptVersion.prompt_id, PromptVersion.content).where(or_(*pairs))
    )
    return {names[pid]: (content or {}).get("description") for pid, content in rows.all()}


async def _open_requests(
    session: AsyncSession, deps: Deps
) -> tuple[list[RequestView], list[OpenRequest], int]:
    """The oldest open requests with their gate checklists, the next ones as lines, and how
    many are open in all."""
    is_open = PromotionRequest.state == RequestState.OPEN.value
    total = (await session.scalar(select(func.count()).where(is_open))) or 0
    rows = (
        await session.execute(
            select(PromotionRequest, Prompt, PromptVersion)
            .join(Prompt, Prompt.id == PromotionRequest.prompt_id)
            .join(PromptVersion, PromptVersion.id == PromotionRequest.version_id)
            .where(is_open)
            .order_by(PromotionRequest.created_at, PromotionRequest.id)
            .limit(MAX_REQUESTS)
        )
    ).all()
    checked = [
        await gates.view(session, deps, request, prompt, version, with_evidence=False)
        for request, prompt, version in rows[:MAX_CHECKED]
    ]
    lines = [
        OpenRequest(
            id=request.id,
            code=request_code(request.id),
            prompt=prompt.name,
            version=version.version,
            environment=request.environment,
            requester=request.requester,
            created_at=request.created_at,
        )
        for request, prompt, version in rows[MAX_CHECKED:]
    ]
    return checked, lines, total


async def _running_soaks(session: AsyncSession, deps: Deps) -> list[tuple[str, SoakView]]:
    now = deps.clock.now()
    ordered = sorted(await running_rows(session), key=lambda row: (row[1], row[0].id))
    return [(name, soak_view(deps, soak, name, version, now)) for soak, name, version in ordered]
