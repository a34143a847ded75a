"""Read-only questions: status, history, the deployment export."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import RequestState
from promptship.domain.promptfile import semver_key
from promptship.errors import Conflict, NotFound
from promptship.services import gates, registry
from promptship.services.deps import Deps
from promptship.services.soaks import plan
from promptship.services.views import (
    AuditEventView,
    DeploymentView,
    HistoryPage,
    PromptMessage,
    PromptStatus,
    RuntimePrompt,
    SoakView,
    VersionSummary,
)
from promptship.store.models import (
    AuditEvent,
    AuditHead,
    Deployment,
    PromotionRequest,
    Prompt,
    PromptVersion,
    SoakRun,
)

MAX_PAGE = 200

log = logging.getLogger(__name__)


async def _deployments(
    session: AsyncSession, deps: Deps, prompt_ids: list[int]
) -> dict[int, list[DeploymentView]]:
    order = {name: i for i, name in enumerate(deps.policy.environments.names)}
    rows = (
        await session.execute(
            select(Deployment, PromptVersion)
            .join(PromptVersion, PromptVersion.id == Deployment.version_id)
            .where(Deployment.prompt_id.in_(prompt_ids))
        )
    ).all()
    found: dict[int, list[DeploymentView]] = {}
    for deployment, version in rows:
        found.setdefault(deployment.prompt_id, []).append(
            DeploymentView(
                environment=deployment.environment,
                version=version.version,
                status=version.status,
                deployed_at=deployment.deployed_at,
                deployed_by=deployment.deployed_by,
                revision=deployment.revision,
            )
        )
    for views in found.values():
        views.sort(key=lambda d: order.get(d.environment, len(order)))
    return found


async def status(session: AsyncSession, deps: Deps, name: str | None = None) -> list[PromptStatus]:
    """Each prompt (or the named one) with its version per environment and open requests."""
    if name is not None:
        prompts = [await registry.get_prompt(session, name)]
    else:
        prompts = list(
            (await session.execute(select(Prompt).order_by(Prompt.name))).scalars().all()
        )
    return await statuses(session, deps, prompts)


async def statuses(
    session: AsyncSession, deps: Deps, prompts: list[Prompt], with_requests: bool = True
) -> list[PromptStatus]:
    """``prompts``' statuses, in their order: a handful of queries however many there are
    (the open requests' gate checklists, one view each, only ``with_requests``)."""
    if not prompts:
        return []
    ids = [p.id for p in prompts]
    deployed = await _deployments(session, deps, ids)
    counts: dict[int, int] = {}
    latest: dict[int, str] = {}  # the highest version, as ``/prompt status NAME`` says
    rows = await session.execute(
        select(PromptVersion.prompt_id, PromptVersion.version).where(
            PromptVersion.prompt_id.in_(ids)
        )
    )
    for prompt_id, version in rows.all():
        counts[prompt_id] = counts.get(prompt_id, 0) + 1
        best = latest.get(prompt_id)
        if best is None or semver_key(version) > semver_key(best):
            latest[prompt_id] = version
    open_views: dict[int, list[Any]] = {}
    if with_requests:
        open_rows = (
            await session.scalars(
                select(PromotionRequest)
                .where(
                    PromotionRequest.prompt_id.in_(ids),
                    PromotionRequest.state == RequestState.OPEN.value,
                )
                .order_by(PromotionRequest.id)
            )
        ).all()
        by_prompt = {p.id: p for p in prompts}
        for request in open_rows:
            open_views.setdefault(request.prompt_id, []).append(
                await gates.view(session, deps, request, by_prompt[request.prompt_id])
            )
    return [
        PromptStatus(
            name=p.name,
            latest_version=latest.get(p.id),
            versions=counts.get(p.id, 0),
            environments=deployed.get(p.id, []),
            open_requests=open_views.get(p.id, []),
        )
        for p in prompts
    ]


async def list_versions(session: AsyncSession, name: str) -> list[VersionSummary]:
    prompt = await registry.get_prompt(session, name)
    return [registry.summary(prompt, v) for v in await registry.versions_of(session, prompt.id)]


async def history(
    session: AsyncSession,
    deps: Deps,
    name: str,
    environment: str | None = None,
    before: int | None = None,
    limit: int = 20,
) -> HistoryPage:
    """The prompt's audit events, newest first, a page at a time (keyset on ``seq``)."""
    await registry.get_prompt(session, name)
    if environment is not None:
        deps.policy.environments.check(environment)
    limit = max(1, min(limit, MAX_PAGE))
    query = select(AuditEvent).where(AuditEvent.prompt == name)
    if environment is not None:
        query = query.where(AuditEvent.environment == environment)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    rows = (
        (await session.execute(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)))
        .scalars()
        .all()
    )
    events = [event_view(e) for e in rows[:limit]]
    return HistoryPage(
        prompt=name,
        environment=environment,
        events=events,
        next_before=events[-1].seq if len(rows) > limit else None,
    )


async def soak_status(
    session: AsyncSession, deps: Deps, name: str, limit: int = 10
) -> list[SoakView]:
    """The prompt's soaks, newest first."""
    prompt = await registry.get_prompt(session, name)
    rows = (
        await session.execute(
            select(SoakRun, PromptVersion.version)
            .join(PromptVersion, PromptVersion.id == SoakRun.version_id)
            .where(PromptVersion.prompt_id == prompt.id)
            .order_by(SoakRun.id.desc())
            .limit(limit)
        )
    ).all()
    now = deps.clock.now()
    return [soak_view(deps, soak, name, version, now) for soak, version in rows]


def soak_view(deps: Deps, soak: SoakRun, name: str, version: str, now: datetime) -> SoakView:
    schedule = plan(deps, soak, name, version)
    following = schedule.due_cycle(now) + 1
    return SoakView(
        id=soak.id,
        version=version,
        environment=soak.environment,
        kind=soak.kind,
        state=soak.state,
        started_at=soak.started_at,
        ends_at=soak.ends_at,
        finished_at=soak.finished_at,
        cycles_done=soak.cycles_done,
        cycles_total=schedule.cycles,
        next_at=schedule.due_at(following)
        if soak.state == "running" and following <= schedule.cycles
        else None,
        worst_divergence=soak.worst_divergence,
        failure=soak.failure,
    )


async def recent_events(session: AsyncSession, limit: int = 10) -> list[AuditEventView]:
    rows = (
        (await session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)))
        .scalars()
        .all()
    )
    return [event_view(e) for e in rows]


def event_view(e: AuditEvent) -> AuditEventView:
    return AuditEventView(
        seq=e.seq,
        at=e.at,
        actor=e.actor,
        action=e.action,
        prompt=e.prompt,
        version=e.version,
        environment=e.environment,
        request_id=e.request_id,
        details=e.details,
    )


async def deployment_file(
    session: AsyncSession, deps: Deps
) -> dict[str, dict[str, dict[str, Any]]]:
    """The deployment file: ``{prompt: {environment: {prompt_version, model, temperature,
    updated_by, promoted_at}}}`` (``updated_at`` for dev, which is moved, not promoted), with
    ``max_tokens`` and ``content_hash`` besides. ``updated_by`` is the person who caused the
    move (the requester of a promotion completed by its tests, soak or an override; the
    approver whose approval completed it; "U04 (via ci-github)" for a service acting for
    a person), or ``promptship (auto-revert of …)``."""
    rows = (
        await session.execute(
            select(Prompt.name, Deployment, PromptVersion)
            .join(Deployment, Deployment.prompt_id == Prompt.id)
            .join(PromptVersion, PromptVersion.id == Deployment.version_id)
            .order_by(Prompt.name)
        )
    ).all()
    envs = deps.policy.environments
    order = {name: i for i, name in enumerate(envs.names)}
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for name, deployment, version in sorted(
        rows, key=lambda r: (r[0], order.get(r[1].environment, 9))
    ):
        when = "updated_at" if deployment.environment == envs.dev else "promoted_at"
        result.setdefault(name, {})[deployment.environment] = {
            "prompt_version": version.version,
            "model": version.model,
            "temperature": version.temperature,
            "max_tokens": version.max_tokens,
            "content_hash": version.content_hash,
            "updated_by": deployment.deployed_by,
            when: deployment.deployed_at.isoformat(),
        }
    return result


async def runtime_prompt(
    session: AsyncSession, deps: Deps, name: str, environment: str
) -> RuntimePrompt:
    """What an app runs for ``name`` in ``environment`` now, with the pointer's revision.
    A version whose stored content no longer hashes to its ``content_hash`` (edited in
    the database), or a pointer at another prompt's version, is refused with Conflict,
    never served."""
    prompt = await registry.get_prompt(session, name)
    deps.policy.environments.check(environment)
    row = (
        await session.execute(
            select(Deployment, PromptVersion)
            .join(PromptVersion, PromptVersion.id == Deployment.version_id)
            .where(Deployment.prompt_id == prompt.id, Deployment.environment == environment)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(
            f"{name} has nothing in {environment}",
            hint=f"promote a version to {environment} first",
        )
    deployment, version = row
    if version.prompt_id != deployment.prompt_id:
        log.error(
            "refused to serve %s in %s: its pointer names a version of another prompt",
            name,
            environment,
        )
        raise Conflict(
            f"{name} cannot be served in {environment}: its deployment points at a version "
            "of another prompt; run promptship audit verify",
            hint="the database was changed outside promptship; restore it or roll back",
        )
    if registry.served_content_hash(version) != version.content_hash:
        log.error(
            "refused to serve %s %s in %s: its stored content no longer matches its content hash",
            name,
            version.version,
            environment,
        )
        raise Conflict(
            f"{name} {version.version} cannot be served: its stored content no longer "
            "matches its content hash; run promptship audit verify",
            hint="the database was changed outside promptship; restore it or roll back",
        )
    return RuntimePrompt(
        name=name,
        environment=environment,
        version=version.version,
        content_hash=version.content_hash,
        revision=deployment.revision,
        provider=version.provider,
        model=version.model,
        temperature=version.temperature,
        max_tokens=version.max_tokens,
        system_prompt=version.system_prompt,
        deployed_at=deployment.deployed_at,
        deployed_by=deployment.deployed_by,
        variables=version.content.get("variables") or {},
        messages=[
            PromptMessage(role=m["role"], content=m["content"])
            for m in version.content.get("messages") or ()
        ],
    )


async def deployment_revisions(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Every (prompt, environment) pointer's revision: what long-polls watch."""
    rows = (
        await session.execute(
            select(Prompt.name, Deployment.environment, Deployment.revision).join(
                Deployment, Deployment.prompt_id == Prompt.id
            )
        )
    ).all()
    return {(name, env): revision for name, env, revision in rows}


async def last_audit_seq(session: AsyncSession) -> int:
    """The audit chain's last sequence number (0 before the first event): every change of a
    request's or a deployment's state appends an event, so the console watches this one row."""
    seq = (await session.execute(select(AuditHead.seq).where(AuditHead.id == 1))).scalar()
    return int(seq or 0)


#: staging-soaked versions of each prompt whose last cycle's divergence stays on /metrics
DIVERGENCE_VERSIONS = 5


async def staging_divergence(
    session: AsyncSession, per_prompt: int = DIVERGENCE_VERSIONS
) -> list[tuple[str, str, int, float]]:
    """(prompt, version, cycle, rate) of the newest scored cycle of each version's newest
    staging soak, running or ended, for the ``per_prompt`` newest such soaks of each prompt:
    every cycle's rate is the value from the moment it is scored until the next one, and
    the last stays after the soak ends."""
    from promptship.services.deployments import STAGING_SOAK
    from promptship.store.models import SoakCycle

    newest = (
        select(func.max(SoakRun.id))
        .where(SoakRun.kind == STAGING_SOAK)
        .group_by(SoakRun.version_id)
    )
    rows = (
        await session.execute(
            select(Prompt.name, PromptVersion.version, SoakRun.id, SoakCycle.cycle, SoakCycle.rate)
            .join(SoakCycle, SoakCycle.soak_id == SoakRun.id)
            .join(PromptVersion, PromptVersion.id == SoakRun.version_id)
            .join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(SoakRun.id.in_(newest), SoakCycle.rate.is_not(None))
            .order_by(Prompt.name, SoakRun.id.desc(), SoakCycle.cycle.desc())
        )
    ).all()
    latest: dict[int, tuple[str, str, int, float]] = {}
    for name, version, soak_id, cycle, rate in rows:
        latest.setdefault(soak_id, (name, version, int(cycle), float(rate or 0.0)))
    kept: list[tuple[str, str, int, float]] = []
    shown: dict[str, int] = {}
    for soak_id in sorted(latest, reverse=True):
        name = latest[soak_id][0]
        shown[name] = shown.get(name, 0) + 1
        if shown[name] <= per_prompt:
            kept.append(latest[soak_id])
    return sorted(kept)


async def metrics_snapshot(session: AsyncSession) -> dict[str, Any]:
    """Counts the metrics endpoint derives from the store: the same on every replica."""
    from promptship.store.models import Approval, OutboxDeadLetter, OutboxMessage, ValidationRun

    promotions = (
        await session.execute(
            select(PromotionRequest.environment, PromotionRequest.kind, func.count())
            .where(PromotionRequest.state == "promoted")
            .group_by(PromotionRequest.environment, PromotionRequest.kind)
        )
    ).all()
    waits = (
        await session.execute(
            select(Approval.created_at, PromotionRequest.created_at)
            .join(PromotionRequest, PromotionRequest.id == Approval.request_id)
            .where(Approval.approve.is_(True))
        )
    ).all()
    runs = (
        await session.execute(
            select(ValidationRun.state, ValidationRun.started_at, ValidationRun.finished_at).where(
                ValidationRun.finished_at.is_not(None)
            )
        )
    ).all()
    latest = (
        await session.execute(
            select(Prompt.name, PromptVersion.version, ValidationRun.pass_rate)
            .join(PromptVersion, PromptVersion.id == ValidationRun.version_id)
            .join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(
                ValidationRun.id.in_(
                    select(func.max(ValidationRun.id))
                    .where(ValidationRun.pass_rate.is_not(None))
                    .group_by(ValidationRun.version_id)
                )
            )
        )
    ).all()
    soaks = (
        await session.execute(
            select(Prompt.name, PromptVersion.version, SoakRun.kind, SoakRun.worst_divergence)
            .join(PromptVersion, PromptVersion.id == SoakRun.version_id)
            .join(Prompt, Prompt.id == PromptVersion.prompt_id)
            .where(SoakRun.state == "running", SoakRun.worst_divergence.is_not(None))
        )
    ).all()
    backlog = await session.scalar(
        select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "pending")
    )
    staging = await staging_divergence(session)
    dead_letters = await session.scalar(select(func.count()).select_from(OutboxDeadLetter))
    return {
        "promotions": [(env, kind, int(n)) for env, kind, n in promotions],
        "approval_waits": [(a - r).total_seconds() for a, r in waits],
        "runs": [(state, (f - s).total_seconds()) for state, s, f in runs if f is not None],
        "pass_rates": [(n, v, float(rate or 0.0)) for n, v, rate in latest],
        "soak_divergence": [(n, v, k, float(d or 0.0)) for n, v, k, d in soaks],
        "staging_divergence": staging,
        "outbox_backlog": int(backlog or 0),
        "outbox_dead_letters": int(dead_letters or 0),
    }
