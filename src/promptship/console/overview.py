"""The overview page: every prompt per environment, open requests with their gates,
running soaks; built from the same facade questions ``/prompt status`` and App Home ask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptship.services import Promptship
from promptship.services.views import PromptStatus, SoakView

#: prompts shown on one page (the rest are counted)
MAX_PROMPTS = 200


@dataclass(frozen=True)
class PromptRow:
    status: PromptStatus
    description: str | None
    cells: list[Any]  # per environment: DeploymentView or None
    soaks: list[SoakView]


async def overview(core: Promptship) -> dict[str, Any]:
    statuses = await core.status()
    environments = core.policy.environments.names
    running: dict[str, list[SoakView]] = {}
    for name in sorted({plan.prompt for plan in await core.running_soaks()}):
        running[name] = [s for s in await core.soak_status(name) if s.state == "running"]
    shown = statuses[:MAX_PROMPTS]
    described = await core.descriptions([s.name for s in shown if s.versions])
    rows = []
    for status in shown:
        deployed = {d.environment: d for d in status.environments}
        rows.append(
            PromptRow(
                status=status,
                description=described.get(status.name),
                cells=[deployed.get(env) for env in environments],
                soaks=running.get(status.name, []),
            )
        )
    requests = [r for s in statuses for r in s.open_requests]
    requests.sort(key=lambda r: r.created_at)
    return {
        "environments": environments,
        "rows": rows,
        "more": max(0, len(statuses) - MAX_PROMPTS),
        "requests": requests,
        "soaks": [(name, s) for name, soaks in running.items() for s in soaks],
    }
