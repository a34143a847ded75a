"""Approvals and rejections of promotion requests.

Runs inside the caller's transaction under the prompt's row lock (taken by
:func:`promptship.services.requests.load_request`), so a doubled click counts once.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import RequestState
from promptship.errors import BadInput, Conflict, Forbidden
from promptship.services import gates, identities, lifecycle, parties, requests
from promptship.services.deps import Deps, request_code
from promptship.services.roles import DECISION_ROLES
from promptship.services.views import DecisionOutcome
from promptship.store.models import Approval


async def record_decision(
    session: AsyncSession,
    deps: Deps,
    request_id: int,
    actor: Actor,
    roles: frozenset[str],
    approve: bool,
    comment: str | None = None,
    content_hash: str | None = None,
) -> DecisionOutcome:
    prompt, version, request = await requests.load_request(session, request_id)
    code = request_code(request.id)
    identities.check_decider(deps.policy, actor, f"{'approve' if approve else 'reject'} {code}")
    if content_hash is not None and not request.content_hash.startswith(content_hash or "-"):
        raise Conflict(
            f"{code} is for other content than the message you clicked showed",
            hint=f"see /prompt show {prompt.name} {version.version}",
        )
    await requests.ensure_open(session, deps, prompt, version, request)
    user = actor.id
    if not approve and identities.person_of(deps.policy, user) == identities.person_of(
        deps.policy, request.requester
    ):
        raise Forbidden(
            f"you requested {code}; cancel it instead of rejecting it", hint=f"cancel {code}"
        )
    if approve:
        await parties.check_impartial(session, deps, user, prompt, version, [request], "approve it")
    deciding_roles = roles & DECISION_ROLES
    if not deciding_roles:
        raise Forbidden(
            f"only approvers can {'approve' if approve else 'reject'} {code}",
            hint="roles.approvers in the policy file lists them",
        )
    if request.content_hash != version.content_hash:  # pragma: no cover - versions are immutable
        raise Conflict(f"{code} was made for other content of {lifecycle.label(prompt, version)}")
    previous = (
        await session.execute(
            select(Approval).where(Approval.request_id == request.id, Approval.user_id == user)
        )
    ).scalar_one_or_none()
    if previous is not None:
        if previous.approve == approve:
            verb = "approved" if approve else "rejected"
            return DecisionOutcome(
                request=await gates.view(session, deps, request, prompt, version),
                recorded=False,
                message=f"you already {verb} {code}; it counts once",
            )
        raise Conflict(
            f"you already {'approved' if previous.approve else 'rejected'} {code}; "
            "a decision cannot be changed"
        )
    if not approve and not (comment and comment.strip()):
        raise BadInput("a rejection needs a reason", hint=f"reject {code} <reason>")
    try:
        async with session.begin_nested():
            session.add(
                Approval(
                    request_id=request.id,
                    user_id=user,
                    approve=approve,
                    comment=comment.strip() if comment and comment.strip() else None,
                    content_hash=version.content_hash,
                    roles=sorted(deciding_roles),
                    created_at=deps.clock.now(),
                    via=actor.via.value,
                )
            )
    except IntegrityError:  # pragma: no cover - the prompt lock makes this unreachable
        return DecisionOutcome(
            request=await gates.view(session, deps, request, prompt, version),
            recorded=False,
            message=f"you already decided on {code}",
        )
    await identities.record(
        session,
        deps.clock,
        actor,
        action="request.approved" if approve else "request.rejection",
        prompt=prompt.name,
        version=version.version,
        environment=request.environment,
        request_id=request.id,
        details={
            "comment": comment,
            "roles": sorted(deciding_roles),
            "content_hash": version.content_hash,
        },
    )
    if not approve:
        closed = await requests.close(
            session, deps, prompt, version, request, RequestState.REJECTED, actor, comment
        )
        return DecisionOutcome(request=closed, recorded=True, message=f"you rejected {code}")
    if await requests.advance(session, deps, prompt, version, request, actor):
        result = await gates.view(session, deps, request, prompt, version)
        return DecisionOutcome(
            request=result,
            recorded=True,
            message=f"you approved {code}: {lifecycle.label(prompt, version)} is now in {request.environment}",
        )
    result = await gates.view(session, deps, request, prompt, version)
    await requests.notify(session, deps, "request.updated", result)
    have = sum(1 for d in result.decisions if d.approve and "approvers" in d.roles)
    return DecisionOutcome(
        request=result,
        recorded=True,
        message=f"you approved {code} ({min(have, request.required_approvals)}/{request.required_approvals} approvals)",
    )
