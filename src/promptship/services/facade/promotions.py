"""Promotions: requests, approval decisions, rollbacks and archiving."""

from __future__ import annotations

from promptship.domain.identity import Actor
from promptship.domain.lifecycle import RequestKind
from promptship.services import decisions, dev, gates, requests, rollbacks, unblock
from promptship.services.facade.base import UseCaseBase
from promptship.services.views import (
    DecisionOutcome,
    DeploymentMove,
    RequestView,
    RollbackResult,
)


class PromotionUseCases(UseCaseBase):
    """Promotion requests, their decisions, rollbacks."""

    async def promote(
        self,
        name: str,
        version: str,
        environment: str,
        actor: Actor,
        reason: str | None = None,
        *,
        queue_tests: bool = False,
    ) -> RequestView | DeploymentMove:
        """``promote NAME VERSION ENV`` on every surface: dev moves at once (no gates, audited);
        staging and production open (or reuse) a request, as :meth:`request_promotion`."""
        if environment == self.policy.environments.dev:
            return await self.point_dev(name, version, actor, reason)
        return await self.request_promotion(
            name, version, environment, actor, reason, queue_tests=queue_tests
        )

    async def point_dev(
        self, name: str, version: str, actor: Actor, reason: str | None = None
    ) -> DeploymentMove:
        """Point dev at any registered version now: no gates, by anyone who may request."""
        async with self.db.transaction() as session:
            return await dev.point(
                session, self.deps, name, version, self._acting(actor), reason=reason
            )

    async def request_promotion(
        self,
        name: str,
        version: str,
        environment: str,
        actor: Actor,
        reason: str | None = None,
        *,
        queue_tests: bool = False,
    ) -> RequestView:
        """Open (or reuse) a request; with ``queue_tests`` a missing test run is queued."""
        async with self.db.transaction() as session:
            return await requests.request_promotion(
                session,
                self.deps,
                name,
                version,
                environment,
                self._acting(actor),
                reason,
                queue_tests=queue_tests,
            )

    async def breakglass(
        self, name: str, version: str, actor: Actor, reason: str, *, queue_tests: bool = False
    ) -> RequestView:
        async with self.db.transaction() as session:
            return await requests.request_promotion(
                session,
                self.deps,
                name,
                version,
                self.policy.environments.production,
                self._acting(actor),
                reason,
                RequestKind.BREAKGLASS,
                queue_tests=queue_tests,
            )

    async def approve(
        self,
        request_id: int,
        actor: Actor,
        comment: str | None = None,
        *,
        content_hash: str | None = None,
    ) -> DecisionOutcome:
        """Approve; ``content_hash`` (or its prefix) binds the decision to what was shown."""
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await decisions.record_decision(
                session, self.deps, request_id, actor, roles, True, comment, content_hash
            )

    async def reject(
        self, request_id: int, actor: Actor, reason: str, *, content_hash: str | None = None
    ) -> DecisionOutcome:
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await decisions.record_decision(
                session, self.deps, request_id, actor, roles, False, reason, content_hash
            )

    async def override_request(
        self,
        request_id: int,
        actor: Actor,
        reason: str,
        *,
        content_hash: str | None = None,
        run_id: int | None = None,
    ) -> RequestView:
        """Accept the regressions of the run ``run_id`` holding a request back, with a reason:
        approvers only; refused when a later run has replaced it."""
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await unblock.override(
                session, self.deps, request_id, reason, actor, roles, content_hash, run_id
            )

    async def rerun_request_tests(
        self, request_id: int, actor: Actor, *, content_hash: str | None = None
    ) -> RequestView:
        """Run a request's tests again (the requester or an approver); it waits for them."""
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await unblock.rerun_tests(
                session, self.deps, request_id, actor, roles, content_hash
            )

    async def cancel(self, request_id: int, actor: Actor) -> RequestView:
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await requests.cancel(session, self.deps, request_id, actor, roles)

    async def request(self, request_id: int) -> RequestView:
        async with self.db.reader() as session:
            prompt, version, request = await requests.load_request(session, request_id)
            return await gates.view(session, self.deps, request, prompt, version)

    async def expire_stale_requests(self) -> list[RequestView]:
        async with self.db.transaction() as session:
            return await requests.expire_stale(session, self.deps)

    async def rollback(
        self,
        name: str,
        environment: str,
        actor: Actor,
        to_version: str | None = None,
        reason: str | None = None,
    ) -> RollbackResult:
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await rollbacks.rollback(
                session, self.deps, name, environment, actor, roles, to_version, reason
            )

    async def archive(self, name: str, version: str, actor: Actor) -> str:
        async with self.db.transaction() as session:
            return await rollbacks.archive(session, self.deps, name, version, self._acting(actor))
