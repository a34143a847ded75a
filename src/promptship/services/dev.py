"""The development environment: a pointer without gates.

Anyone with write rights points dev at any registered version at once (``promote NAME
VERSION dev``), or, with ``environments.dev.follow_latest``, dev moves to each newly pushed
version that is its prompt's newest. No status changes (a version in dev keeps whatever
status it has), no requests, no soaks; every move is a signed ``deployment.changed``.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import Move, VersionStatus
from promptship.domain.promptfile import semver_key
from promptship.errors import GateRefused
from promptship.services import deployments, lifecycle, registry
from promptship.services.deps import Deps
from promptship.services.views import DeploymentMove


async def point(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str,
    actor: Actor,
    *,
    move: Move = Move.POINT,
    reason: str | None = None,
) -> DeploymentMove:
    """Point dev at ``version_name`` now. Already there: nothing changes (``changed`` is
    False). An archived version is refused: it was retired for good."""
    envs = deps.policy.environments
    prompt, version = await registry.get_version(session, name, version_name)
    prompt = await registry.lock_prompt(session, prompt.id)
    await session.refresh(version)
    pointer = await deployments.active(session, prompt.id, envs.dev)
    previous = await registry.get_version_by_id(session, pointer.version_id) if pointer else None
    result = DeploymentMove(
        prompt=prompt.name,
        environment=envs.dev,
        from_version=previous.version if previous else None,
        to_version=version.version,
        actor=actor.id,
        move=move.value,
        changed=previous is None or previous.id != version.id,
        reason=reason.strip() if reason and reason.strip() else None,
        at=deps.clock.now(),
        via=actor.via.value,
    )
    if not result.changed:
        return result
    if version.status == VersionStatus.ARCHIVED.value:
        raise GateRefused(
            f"{lifecycle.label(prompt, version)} is archived: it runs nowhere any more",
            hint=f"point {envs.dev} at another version, or push a new one",
        )
    await deployments.move_pointer(
        session,
        deps,
        prompt,
        version,
        envs.dev,
        actor,
        move,
        pointer=pointer,
        previous=previous,
        by=deployments.named(actor),
        reason=result.reason,
    )
    return result


async def follow_latest(
    session: AsyncSession, deps: Deps, name: str, version_name: str, actor: Actor
) -> DeploymentMove | None:
    """After a push: move dev to the pushed version when the policy says
    ``follow_latest`` and it is the prompt's newest version; None otherwise."""
    if not deps.policy.environments.dev_policy.follow_latest:
        return None
    prompt = await registry.get_prompt(session, name)
    versions = await registry.versions_of(session, prompt.id)
    if not versions or semver_key(versions[-1].version) != semver_key(version_name):
        return None  # an older line's patch: dev stays on the newest
    return await point(session, deps, name, version_name, actor, move=Move.FOLLOW)
