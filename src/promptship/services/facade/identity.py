"""Who acts: outside identities, API tokens and replay-safe command receipts."""

from __future__ import annotations

from datetime import timedelta

from promptship.domain.identity import Actor, Permission, Scope, Via, grants
from promptship.errors import Forbidden
from promptship.services import identities, receipts, tokens
from promptship.services.facade.base import UseCaseBase
from promptship.services.views import IssuedToken, TokenView


class IdentityUseCases(UseCaseBase):
    """Identities, tokens and command receipts."""

    # -- identities ------------------------------------------------------------------------

    def resolve_identity(self, name: str) -> str:
        """The Slack user ID ``name`` stands for: a Slack user ID as is, an outside identity
        (``github:alice``) mapped under ``identities:`` in the policy; BadInput otherwise."""
        return identities.resolve(self.policy, name)

    # -- tokens ----------------------------------------------------------------------------

    async def create_token(
        self,
        subject: str,
        actor: Actor,
        *,
        service: bool = False,
        scope: Scope | None = None,
        name: str | None = None,
        expires_in: timedelta | None = None,
    ) -> IssuedToken:
        """Issue a token to a person (Slack user ID; approve by default, write from the local
        CLI) or a service (write by default, never approve). Its secret is in the result and nowhere else. The local
        CLI issues a person a deciding scope only where ``local_decisions`` is on: it cannot
        tell who the person is, and one shell would otherwise approve as several people."""
        vouched = actor.via is not Via.LOCAL or self.policy.local_decisions
        scope = scope or (Scope.APPROVE if vouched and not service else Scope.WRITE)
        if not service and not vouched and grants(scope, Permission.DECIDE):
            raise Forbidden(
                f"the local CLI cannot vouch for who {subject.strip()[:100]} is: people get "
                "deciding tokens from Slack with /prompt token (Slack vouches for them); here "
                "it issues read, write and runtime tokens and service tokens",
                hint=f"promptship token create --user {subject.strip()[:100]} --scope write",
            )
        async with self.db.transaction() as session:
            return await tokens.create(
                session, self.deps, subject=subject, service=service, scope=scope,
                actor=self._acting(actor), name=name, expires_in=expires_in,
            )  # fmt: skip

    async def create_own_token(self, actor: Actor, scope: Scope | None = None) -> IssuedToken:
        """A token for a person Slack vouches for (``/prompt token``), for
        ``tokens.OWN_LIFETIME``; its scope follows ``tokens.own_scope``. A token never mints
        another: else one leaked token renews itself for ever."""
        if not (actor.is_person and actor.via is Via.SLACK and actor.proxy is None):
            raise Forbidden(
                "only a person signed in through Slack gets a token for themselves",
                hint="ask in Slack with /prompt token",
            )
        chosen = tokens.own_scope(await self.roles.roles_of(actor.id), scope)
        async with self.db.transaction() as session:
            return await tokens.create(
                session, self.deps, subject=actor.id, service=False, scope=chosen, actor=actor,
                name="slack", expires_in=tokens.OWN_LIFETIME,
            )  # fmt: skip

    async def list_tokens(
        self, subject: str | None = None, *, include_revoked: bool = False
    ) -> list[TokenView]:
        async with self.db.reader() as session:
            return await tokens.list_tokens(session, subject, include_revoked=include_revoked)

    async def revoke_token(self, ref: str, actor: Actor, *, own: bool = False) -> TokenView:
        """Revoke a token by id or prefix; with ``own``, only one issued to ``actor``."""
        async with self.db.transaction() as session:
            owner = actor.id if own else None
            return await tokens.revoke(session, self.deps, ref, self._acting(actor), owner=owner)

    async def authenticate_token(self, secret: str) -> tokens.TokenIdentity | None:
        """Who a stored API token speaks for; None when it is unknown, revoked or expired."""
        async with self.db.transaction() as session:
            return await tokens.authenticate(session, self.deps, secret)

    async def api_tokens_configured(self) -> bool:
        """Whether any stored token could authenticate now (then the API requires one)."""
        async with self.db.reader() as session:
            return await tokens.any_active(session, self.deps)

    # -- replay-safe commands ----------------------------------------------------------------

    async def receive_command(
        self, signed_at: str, raw_body: str, actor: Actor
    ) -> receipts.Receipt:
        """Claim the receipt of a signed command request (its timestamp header and raw body)
        before acting on it; ``first`` is False for a replay of a request already received."""
        key = receipts.fingerprint(signed_at, raw_body)
        async with self.db.transaction() as session:
            return await receipts.claim(session, self.clock, key, actor.id, signed_at)
