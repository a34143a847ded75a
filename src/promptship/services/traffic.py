"""Traffic samples: the real queries a soak replays, logged by apps (client, API) or
imported from JSONL, each with the template vars the app rendered its prompt with (the soak
renders both versions with them). Each batch is checked whole before anything is stored;
retention (policy ``traffic: {max_samples, max_age}``) keeps the newest samples of each
prompt and environment, none older than the age limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.promptfile import MAX_VERSION_CHARS, vars_problem
from promptship.errors import BadInput
from promptship.services import registry
from promptship.services.deps import Deps
from promptship.store.models import TrafficSample

MAX_BATCH = 1000
MAX_INPUT_CHARS = 32_000
MAX_OUTPUT_CHARS = 64_000
KEYS = {"prompt", "environment", "input", "output", "version", "at", "vars"}


@dataclass(frozen=True)
class IngestResult:
    stored: int
    pruned: int


def _check(deps: Deps, index: int, sample: Any) -> dict[str, Any]:
    where = f"sample {index + 1}"
    if not isinstance(sample, dict):
        raise BadInput(f"{where}: expected an object with prompt, environment and input")
    unknown = set(sample) - KEYS
    if unknown:
        raise BadInput(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}",
            hint=f"the keys are {', '.join(sorted(KEYS))}",
        )
    for key in ("prompt", "environment", "input"):
        if not isinstance(sample.get(key), str) or not sample[key].strip():
            raise BadInput(f"{where}: {key} is required text")
    deps.policy.environments.check(sample["environment"])
    if len(sample["input"]) > MAX_INPUT_CHARS:
        raise BadInput(
            f"{where}: input is {len(sample['input']):,} characters; the limit is "
            f"{MAX_INPUT_CHARS:,}"
        )
    output = sample.get("output")
    if output is not None and (not isinstance(output, str) or len(output) > MAX_OUTPUT_CHARS):
        raise BadInput(f"{where}: output must be text of at most {MAX_OUTPUT_CHARS:,} characters")
    version = sample.get("version")
    if version is not None and (not isinstance(version, str) or len(version) > MAX_VERSION_CHARS):
        raise BadInput(
            f'{where}: version must be text of at most {MAX_VERSION_CHARS} characters, e.g. "2.1.0"'
        )
    given = sample.get("vars")
    if given is not None:
        problem = vars_problem(given)
        if problem is not None:
            raise BadInput(
                f"{where}: vars: {problem}",
                hint='vars maps the template\'s variables to values, e.g. {"plan": "pro"}',
            )
    at = sample.get("at")
    if at is not None:
        try:
            parsed = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise BadInput(
                f"{where}: at must be an ISO 8601 time with a zone, e.g. 2026-11-25T10:00:00Z"
            )
        sample = {**sample, "at": parsed}
    return dict(sample)


async def ingest(session: AsyncSession, deps: Deps, samples: list[Any]) -> IngestResult:
    if not isinstance(samples, list) or not samples:
        raise BadInput("send a non-empty list of samples")
    if len(samples) > MAX_BATCH:
        raise BadInput(f"{len(samples):,} samples in one batch; the limit is {MAX_BATCH:,}")
    checked = [_check(deps, i, s) for i, s in enumerate(samples)]
    now = deps.clock.now()
    prompts: dict[str, int] = {}
    for sample in checked:
        name = sample["prompt"]
        if name not in prompts:
            prompts[name] = (await registry.get_prompt(session, name)).id
    session.add_all(
        TrafficSample(
            prompt_id=prompts[s["prompt"]],
            environment=s["environment"],
            input=s["input"],
            output=s.get("output"),
            version=s.get("version"),
            vars=s.get("vars"),
            at=s.get("at") or now,
        )
        for s in checked
    )
    await session.flush()
    pruned = 0
    keep = deps.policy.traffic
    for prompt_id, environment in sorted(
        {(prompts[x["prompt"]], x["environment"]) for x in checked}
    ):
        pruned += await _prune(
            session, prompt_id, environment, now - keep.max_age, keep.max_samples
        )
    return IngestResult(stored=len(checked), pruned=pruned)


async def _prune(
    session: AsyncSession, prompt_id: int, environment: str, oldest: datetime, keep: int
) -> int:
    mine = (TrafficSample.prompt_id == prompt_id, TrafficSample.environment == environment)
    old = await session.execute(delete(TrafficSample).where(*mine, TrafficSample.at < oldest))
    removed = int(old.rowcount or 0)  # type: ignore[attr-defined]
    # the newest sample past the ones to keep, if there is one: it and all older go
    boundary = (
        await session.execute(
            select(TrafficSample.at, TrafficSample.id)
            .where(*mine)
            .order_by(TrafficSample.at.desc(), TrafficSample.id.desc())
            .offset(keep)
            .limit(1)
        )
    ).first()
    if boundary is not None:
        at, cutoff = boundary
        extra = await session.execute(
            delete(TrafficSample).where(
                *mine,
                (TrafficSample.at < at) | ((TrafficSample.at == at) & (TrafficSample.id <= cutoff)),
            )
        )
        removed += int(extra.rowcount or 0)  # type: ignore[attr-defined]
    return removed
