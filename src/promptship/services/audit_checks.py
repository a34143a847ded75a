"""Cross-checks of the tables the gates read against the audit log: a row written straight
into the database, without the service that records its event, shows up here."""

from __future__ import annotations

from sqlalchemy import and_, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import RequestState
from promptship.services.deps import request_code
from promptship.store.models import (
    Approval,
    AuditEvent,
    Deployment,
    PromotionRequest,
    Prompt,
    PromptVersion,
)

LIMIT = 20


async def cross_check(session: AsyncSession) -> list[str]:
    """Plain sentences, one per mismatch (up to ``LIMIT`` of each kind)."""
    return [
        *await _approvals(session),
        *await _deployments(session),
        *await _closed_requests(session),
    ]


async def _approvals(session: AsyncSession) -> list[str]:
    action = case((Approval.approve, "request.approved"), else_="request.rejection")
    rows = await session.execute(
        select(Approval.request_id, Approval.user_id, Approval.approve)
        .where(
            ~exists().where(
                AuditEvent.request_id == Approval.request_id,
                AuditEvent.actor == Approval.user_id,
                AuditEvent.action == action,
            )
        )
        .order_by(Approval.id)
        .limit(LIMIT)
    )
    return [
        f"{request_code(request_id)} has {'an approval' if approve else 'a rejection'} by "
        f"{user} that the audit log never recorded (inserted into the database directly?)"
        for request_id, user, approve in rows.all()
    ]


async def _deployments(session: AsyncSession) -> list[str]:
    newest = (
        select(
            AuditEvent.prompt,
            AuditEvent.environment,
            func.max(AuditEvent.seq).label("seq"),
        )
        .where(AuditEvent.action == "deployment.changed")
        .group_by(AuditEvent.prompt, AuditEvent.environment)
        .subquery()
    )
    logged = (
        select(AuditEvent.prompt, AuditEvent.environment, AuditEvent.version)
        .join(newest, newest.c.seq == AuditEvent.seq)
        .subquery()
    )
    rows = await session.execute(
        select(Prompt.name, Deployment.environment, PromptVersion.version, logged.c.version)
        .join(Prompt, Prompt.id == Deployment.prompt_id)
        .join(PromptVersion, PromptVersion.id == Deployment.version_id)
        .outerjoin(
            logged,
            and_(logged.c.prompt == Prompt.name, logged.c.environment == Deployment.environment),
        )
        .where(logged.c.version.is_(None) | (logged.c.version != PromptVersion.version))
        .order_by(Prompt.name, Deployment.environment)
        .limit(LIMIT)
    )
    problems = []
    for prompt, environment, live, recorded in rows.all():
        if recorded is None:
            problems.append(
                f"{prompt} runs {live} in {environment}, but the audit log records no "
                "deployment of it there (the pointer was written directly?)"
            )
        else:
            problems.append(
                f"{prompt} runs {live} in {environment}, but the audit log's last deployment "
                f"there was {recorded} (the pointer was changed directly?)"
            )
    return problems


async def _closed_requests(session: AsyncSession) -> list[str]:
    rows = await session.execute(
        select(PromotionRequest.id, PromotionRequest.state)
        .where(
            PromotionRequest.state != RequestState.OPEN.value,
            ~exists().where(
                AuditEvent.request_id == PromotionRequest.id,
                AuditEvent.action == "request." + PromotionRequest.state,
            ),
        )
        .order_by(PromotionRequest.id)
        .limit(LIMIT)
    )
    return [
        f"{request_code(request_id)} is {state}, but the audit log never recorded it closing "
        "(changed in the database directly?)"
        for request_id, state in rows.all()
    ]
