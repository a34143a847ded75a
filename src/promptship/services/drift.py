"""The drift watch: nightly re-runs of the suites of what is live in production."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor, Via
from promptship.errors import GateRefused
from promptship.services import registry, runs
from promptship.services.deps import Deps
from promptship.services.views import RunView
from promptship.store.models import Deployment, JobClaim, Prompt, PromptVersion

#: who asks for the nightly re-runs of production suites
DRIFT_ACTOR = "promptship:drift"
DRIFT = Actor(DRIFT_ACTOR, Via.SYSTEM)


async def start_drift_watch(
    session: AsyncSession, deps: Deps, key: str, owner: str
) -> list[RunView]:
    """Claim the drift watch's tick ``key`` (once across replicas) and queue a run of each
    production version's suite; a pass rate under the gate then alerts the channel."""
    now = deps.clock.now()
    claimed = await session.execute(
        registry.dialect_insert(session)(JobClaim)
        .values(key=key, owner=owner, lease_until=now, claimed_at=now, done_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return []
    production = deps.policy.environments.production
    live = (
        await session.execute(
            select(Prompt.name, PromptVersion.version, PromptVersion.content)
            .join(Deployment, Deployment.prompt_id == Prompt.id)
            .join(PromptVersion, PromptVersion.id == Deployment.version_id)
            .where(Deployment.environment == production)
            .order_by(Prompt.name)
        )
    ).all()
    queued = []
    for name, version, content in live:
        cases = len(content.get("tests", []))
        if not cases:
            continue
        try:
            async with session.begin_nested():
                queued.append(
                    await runs.start_run(session, deps, name, version, DRIFT, cases, queued=True)
                )
        except GateRefused:
            continue  # a run of it is under way already
    return queued
