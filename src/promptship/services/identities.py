"""Who people are across systems, and the audit of what an :class:`Actor` did.

The policy's ``identities:`` maps outside identities (``github:alice``, ``gitlab:bob``, an
e-mail address) to Slack user IDs, so a service acting for ``github:alice`` acts for the
Slack user that is alice. Every audit event a service writes goes through :func:`record`,
which keeps the actor's id and how that identity was known (``auth``, ``on_behalf_of_by``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from promptship.clock import Clock
from promptship.config import Policy
from promptship.domain.identity import Actor, Via, is_slack_user_id
from promptship.errors import BadInput, Forbidden
from promptship.services import audit
from promptship.store.models import AuditEvent


def resolve(policy: Policy, name: str) -> str:
    """The Slack user ID ``name`` stands for: a Slack user ID as is, a mapped outside
    identity its Slack user ID; BadInput naming it otherwise."""
    name = (name or "").strip()
    if is_slack_user_id(name):
        return name
    mapped = policy.identities.get(name)
    if mapped is not None:
        return mapped
    shown = name[:200] or "an empty name"
    raise BadInput(
        f"{shown} is not a Slack user ID and not mapped under identities: in promptship.yaml",
        hint=f"add it to promptship.yaml, e.g. identities: {{{shown!r}: U01ABCDEF}}",
    )


def person_of(policy: Policy, name: str) -> str:
    """Who ``name`` is for the person rules (no self-approval, the author rule): its Slack
    user ID when it is mapped, else ``name`` itself (a Slack user ID, a service, promptship)."""
    return policy.identities.get(name, name)


LOCAL_DECISION_HINT = (
    "decide in Slack, or through a server with your own token: PROMPTSHIP_SERVER=… "
    "PROMPTSHIP_TOKEN=… (get it in Slack with /prompt token)"
)


def check_decider(policy: Policy, actor: Actor, what: str) -> None:
    """Refuse a decision (approve, reject, override regressions, roll back production) by
    anyone but an authenticated person: services never decide, and the local CLI only
    when the policy allows ``local_decisions`` (a single-person trial). Promptship itself
    decides what its rules say (an auto-revert)."""
    if actor.via is Via.SYSTEM:
        return
    if actor.service:
        raise Forbidden(
            f"{actor.id} is a service: service identities push and request; they never decide",
            hint=f"a person must {what}, in Slack or with their own token",
        )
    if actor.via is Via.LOCAL and not policy.local_decisions:
        raise Forbidden(
            f"the local CLI cannot {what}: --as and PROMPTSHIP_USER are self-declared, "
            "so decisions need Slack or a token",
            hint=LOCAL_DECISION_HINT,
        )


async def record(
    session: AsyncSession,
    clock: Clock,
    actor: Actor,
    *,
    action: str,
    prompt: str | None = None,
    version: str | None = None,
    environment: str | None = None,
    request_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit event by ``actor``: its id, plus how it was known in ``details``."""
    return await audit.record(
        session,
        clock,
        actor=actor.id,
        action=action,
        prompt=prompt,
        version=version,
        environment=environment,
        request_id=request_id,
        details={**actor.audit_details(), **(details or {})},
    )
