"""Moving a version along the lifecycle table (:mod:`promptship.domain.lifecycle`),
with the audit event each move records.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import Move, RequestKind, VersionStatus, require_transition
from promptship.services import identities
from promptship.services.deps import Deps
from promptship.store.models import PromotionRequest, Prompt, PromptVersion


def label(prompt: Prompt, version: PromptVersion) -> str:
    """How users name a version: ``<prompt> <version>``."""
    return f"{prompt.name} {version.version}"


def target_move(request: PromotionRequest) -> Move:
    """The move a request asks for: break-glass or a normal promotion."""
    return Move.BREAKGLASS if request.kind == RequestKind.BREAKGLASS else Move.PROMOTE


async def transition(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    target: VersionStatus,
    move: Move,
    actor: Actor,
    *,
    environment: str | None = None,
    request_id: int | None = None,
    details: dict[str, object] | None = None,
) -> None:
    """Move a version's status along the lifecycle table, with its audit event."""
    source = VersionStatus(version.status)
    require_transition(label(prompt, version), source, target, move, environment)
    version.status = target.value
    await identities.record(
        session,
        deps.clock,
        actor,
        action="version.status",
        prompt=prompt.name,
        version=version.version,
        environment=environment,
        request_id=request_id,
        details={"from": source.value, "to": target.value, "move": move.value, **(details or {})},
    )
