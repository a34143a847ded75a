"""Who is party to a promotion: its requester, the version's author, and whoever asked or
pushed on their behalf. A decision that lets a version move (an approval, an override of
its regressions) is never made by a party."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain.lifecycle import RequestState
from promptship.errors import Conflict, Forbidden
from promptship.services import audit, identities, lifecycle
from promptship.services.deps import Deps, request_code
from promptship.store.models import PromotionRequest, Prompt, PromptVersion

TAMPERED_VERSION = (
    "the version's record does not match its signed audit event; see promptship audit verify"
)


async def signed_authorship(
    session: AsyncSession, prompt: Prompt, version: PromptVersion
) -> tuple[str, str | None]:
    """The author and proxy of a version from its signed registration, never from its row
    (no hash covers ``author``/``pushed_by``); refused when no signed registration exists."""
    signed = await audit.signed_version_events(
        session, prompt.name, version.version, ("version.registered",)
    )
    if not signed or signed[0].details.get("content_hash") != version.content_hash:
        raise Conflict(TAMPERED_VERSION, hint="ask an admin to run promptship audit verify")
    return audit.registered_authorship(signed[0])


async def signed_requester(
    session: AsyncSession, request: PromotionRequest
) -> tuple[str, str | None]:
    """The requester and the proxy (who asked on the requester's behalf) of a request from
    its signed ``request.created`` event, never from its row (no hash covers
    ``requested_by``); the row's only when the request has no signed creation, which its
    gates refuse anyway."""
    event = await audit.signed_creation(session, request.id)
    if event is None:
        return request.requester, request.requested_by
    return audit.created_requester(event)


def _is(deps: Deps, person: str, proxy: str | None) -> bool:
    return proxy is not None and person == identities.person_of(deps.policy, proxy)


async def party_to(
    session: AsyncSession,
    deps: Deps,
    who: str,
    prompt: Prompt,
    version: PromptVersion,
    requests: Sequence[PromotionRequest],
    *,
    authorship: bool = True,
) -> str | None:
    """How ``who`` is party to ``requests`` of the version ("requested req-3", "wrote
    customer-support 1.1.0", ...), or None when they are not. The rules compare people: an
    outside identity counts as its Slack user. ``authorship`` off leaves the version's
    author and pusher out (the caller checked them)."""
    person = identities.person_of(deps.policy, who)
    signed = [(request, *await signed_requester(session, request)) for request in requests]
    for request, requester, _ in signed:
        if person == identities.person_of(deps.policy, requester):
            return f"requested {request_code(request.id)}"
    author, pushed_by = (
        await signed_authorship(session, prompt, version) if authorship else (None, None)
    )
    label = lifecycle.label(prompt, version)
    if author is not None and person == identities.person_of(deps.policy, author):
        return f"wrote {label}"
    # whoever acted on behalf of the author or requester counts as them: else an admin
    # pushes as U09 and then approves their own content
    for request, requester, requested_by in signed:
        if _is(deps, person, requested_by):
            return f"requested {request_code(request.id)} on behalf of {requester}"
    if _is(deps, person, pushed_by):
        return f"pushed {label} on behalf of {author}"
    return None


async def check_impartial(
    session: AsyncSession,
    deps: Deps,
    who: str,
    prompt: Prompt,
    version: PromptVersion,
    requests: Sequence[PromotionRequest],
    decision: str,
) -> None:
    """Refuse (Forbidden) ``decision`` ("approve it") to a party of the requests or the
    version."""
    party = await party_to(session, deps, who, prompt, version, requests)
    if party is not None:
        raise Forbidden(f"you {party}; someone else must {decision}")


async def open_requests(session: AsyncSession, version: PromptVersion) -> list[PromotionRequest]:
    """The version's open requests, oldest first: the ones a decision on it may move."""
    return list(
        (
            await session.scalars(
                select(PromotionRequest)
                .where(
                    PromotionRequest.version_id == version.id,
                    PromotionRequest.state == RequestState.OPEN.value,
                )
                .order_by(PromotionRequest.id)
            )
        ).all()
    )
