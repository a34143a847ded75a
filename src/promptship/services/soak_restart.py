"""Restarting a staging soak: the way out of a soak that failed or ran short of traffic.

An approver restarts the soak of the version staging runs: any running staging soak of it
is cancelled, a fresh one starts with the policy's current soak settings, the restart is
audited, and the open requests of the version re-read their gates (the soak gate reads the
newest soak) and are told.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import VersionStatus
from promptship.errors import Forbidden, GateRefused
from promptship.services import deployments, identities, queries, registry, requests
from promptship.services.deps import Deps
from promptship.services.views import SoakView
from promptship.store.models import SoakRun


def check_restarter(deps: Deps, actor: Actor, roles: frozenset[str], name: str) -> None:
    """Restarting a soak is an approver's call, made by an authenticated person."""
    identities.check_decider(deps.policy, actor, f"restart the soak of {name}")
    if actor.is_person and "approvers" not in roles:
        raise Forbidden(
            f"only approvers can restart the soak of {name}",
            hint="ask an approver (roles.approvers in the policy file)",
        )


async def restart(
    session: AsyncSession,
    deps: Deps,
    name: str,
    version_name: str | None,
    actor: Actor,
    roles: frozenset[str],
) -> SoakView:
    """Start a fresh staging soak of the version staging runs (``version_name`` must be
    that version when given); returns the new soak."""
    check_restarter(deps, actor, roles, name)
    envs = deps.policy.environments
    prompt = await registry.get_prompt(session, name)
    prompt = await registry.lock_prompt(session, prompt.id)
    pointer = await deployments.active(session, prompt.id, envs.staging)
    if pointer is None:
        raise GateRefused(
            f"{name} has no version in {envs.staging}: there is no soak to restart",
            hint=f"promote a version to {envs.staging}; its soak starts then",
        )
    staged = await registry.get_version_by_id(session, pointer.version_id)
    if version_name is not None and version_name.removeprefix("v") != staged.version:
        _, asked = await registry.get_version(session, name, version_name.removeprefix("v"))
        raise GateRefused(
            f"{name} {asked.version} is not in {envs.staging}: {envs.staging} runs "
            f"{staged.version}, and only the version in {envs.staging} soaks",
            hint=f"promptship soak restart {name} {staged.version}, or promote "
            f"{asked.version} to {envs.staging} (its soak starts then)",
        )
    if staged.status != VersionStatus.STAGING.value:
        raise GateRefused(
            f"{name} {staged.version} is {staged.status}, not waiting in {envs.staging}: "
            "it needs no staging soak"
        )
    if envs.production_policy.soak.total_seconds() <= 0:
        raise GateRefused(
            "the policy sets no staging soak (environments.production.soak is 0): "
            "there is nothing to restart"
        )
    running = (
        await session.scalars(
            select(SoakRun).where(
                SoakRun.version_id == staged.id,
                SoakRun.environment == envs.staging,
                SoakRun.kind == deployments.STAGING_SOAK,
                SoakRun.state == "running",
            )
        )
    ).all()
    # the audit records the soak as it was, so it is read before it is cancelled
    previous = await deployments.latest_soak(session, staged.id, envs.staging)
    previous_state = previous.state if previous else None
    now = deps.clock.now()
    for old in running:
        old.state = "cancelled"
        old.finished_at = now
        old.failure = f"restarted by {actor.id}"
    soak = await deployments.start_staging_soak(session, deps, staged)
    assert soak is not None  # the policy's soak length was checked above
    policy = envs.production_policy
    await identities.record(
        session,
        deps.clock,
        actor,
        action="soak.restarted",
        prompt=prompt.name,
        version=staged.version,
        environment=envs.staging,
        details={
            "soak": soak.id,
            "previous_soak": previous.id if previous else None,
            "previous_state": previous_state,
            "ends_at": soak.ends_at.isoformat(),
            "interval_seconds": policy.soak_interval.total_seconds(),
            "sample": policy.soak_sample,
            "min_samples": min(policy.soak_sample, policy.soak_min_samples),
        },
    )
    # the open requests of the version now read the new soak; each is told (request.updated)
    await requests.reevaluate(session, deps, prompt, staged, actor)
    views = await queries.soak_status(session, deps, name, limit=1)
    return views[0]
