"""The overview page: a page of prompts per environment (filtered by name, paged by
keyset), the open requests with their gates and the running soaks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from promptship.services import Promptship
from promptship.services.views import PromptStatus, SoakView


@dataclass(frozen=True)
class PromptRow:
    status: PromptStatus
    description: str | None
    cells: list[Any]  # per environment: DeploymentView or None
    soaks: list[SoakView]


def page_query(q: str, after: str | None) -> str:
    """The query string naming one page of the overview ('' for the first, unfiltered)."""
    params = {k: v for k, v in (("q", q), ("after", after)) if v}
    return f"?{urlencode(params)}" if params else ""


async def overview(core: Promptship, q: str = "", after: str | None = None) -> dict[str, Any]:
    found = await core.overview_page(q, after or None)
    q = found.query
    environments = core.policy.environments.names
    running: dict[str, list[SoakView]] = {}
    for name, soak in found.soaks:
        running.setdefault(name, []).append(soak)
    rows = []
    for status in found.prompts:
        deployed = {d.environment: d for d in status.environments}
        rows.append(
            PromptRow(
                status=status,
                description=found.descriptions.get(status.name),
                cells=[deployed.get(env) for env in environments],
                soaks=running.get(status.name, []),
            )
        )
    return {
        "environments": environments,
        "rows": rows,
        "q": q,
        "matching": found.matching,
        "first": found.before + 1,
        "last": found.before + len(rows),
        "this_page": page_query(q, after),
        "next_page": page_query(q, found.next_after) if found.next_after else None,
        "first_page": page_query(q, None) if after else None,
        "requests": found.requests,
        "more_requests": found.more_requests,
        "open_requests": found.open_requests,
        "soaks": found.soaks,
    }
