"""Tokens are issued per identity, shown once, stored hashed, and stop working when revoked
or expired."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from promptship.clock import ManualClock
from promptship.domain.identity import Actor, Scope, Via
from promptship.errors import BadInput
from promptship.services import Promptship, tokens
from promptship.store.models import ApiToken, AuditEvent

ADMIN = Actor("U07", Via.LOCAL)


async def test_a_token_is_shown_once_and_stored_hashed(core: Promptship) -> None:
    async with core.db.transaction() as session:
        issued = await tokens.create(
            session, core.deps, subject="U01", service=False, scope=Scope.APPROVE, actor=ADMIN
        )
    assert issued.secret.startswith("psk_") and len(issued.secret) > 40
    async with core.db.reader() as session:
        row = (await session.execute(select(ApiToken))).scalar_one()
        stored = [row.token_hash, row.prefix, row.subject, row.scope]
        events = (await session.execute(select(AuditEvent))).scalars().all()
    assert issued.secret not in stored and tokens.digest(issued.secret) == row.token_hash
    assert [e.action for e in events] == ["token.created"]
    assert issued.secret not in str(events[0].details)
    async with core.db.transaction() as session:
        who = await tokens.authenticate(session, core.deps, issued.secret)
    assert who is not None and who.actor() == Actor("U01", Via.TOKEN)
    assert who.scope is Scope.APPROVE


async def test_revoked_and_expired_tokens_authenticate_nobody(
    core: Promptship, clock: ManualClock
) -> None:
    async with core.db.transaction() as session:
        revoked = await tokens.create(
            session, core.deps, subject="U01", service=False, scope=Scope.READ, actor=ADMIN
        )
        expiring = await tokens.create(
            session,
            core.deps,
            subject="ci-github",
            service=True,
            scope=Scope.WRITE,
            actor=ADMIN,
            expires_in=timedelta(days=90),
        )
        await tokens.revoke(session, core.deps, revoked.token.prefix, ADMIN)
    clock.advance(timedelta(days=90))
    async with core.db.transaction() as session:
        assert await tokens.authenticate(session, core.deps, revoked.secret) is None
        assert await tokens.authenticate(session, core.deps, expiring.secret) is None
        assert await tokens.authenticate(session, core.deps, "psk_guessed") is None
        assert not await tokens.any_active(session, core.deps)
        with pytest.raises(BadInput, match="already revoked"):
            await tokens.revoke(session, core.deps, str(revoked.token.id), ADMIN)


async def test_services_never_get_a_deciding_token(core: Promptship) -> None:
    async with core.db.transaction() as session:
        with pytest.raises(BadInput, match="never decide"):
            await tokens.create(
                session, core.deps, subject="ci", service=True, scope=Scope.APPROVE, actor=ADMIN
            )
        with pytest.raises(BadInput, match="not a Slack user ID"):
            await tokens.create(
                session, core.deps, subject="alice", service=False, scope=Scope.READ, actor=ADMIN
            )


def test_env_tokens_name_their_service_and_refuse_unknown_scopes() -> None:
    parsed = tokens.parse_env_tokens("write:ci-github:0123456789abcdef, read:fedcba9876543210")
    assert [(t.scope, t.subject) for t in parsed] == [
        (Scope.WRITE, "ci-github"),
        (Scope.READ, "api-token-2"),
    ]
    with pytest.raises(BadInput, match="unknown scope 'bogus'"):
        tokens.parse_env_tokens("bogus:0123456789abcdef")
    with pytest.raises(BadInput, match="never decide"):
        tokens.parse_env_tokens("approve:ci:0123456789abcdef")
