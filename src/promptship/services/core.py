"""``Promptship``: the use cases, each in one transaction. Slack, CLI and API call these."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from promptship.clock import Clock, SystemClock
from promptship.config import Policy
from promptship.domain.identity import SYSTEM, Actor, Scope
from promptship.domain.lifecycle import RequestKind, RunState
from promptship.domain.promptfile import PromptSpec
from promptship.errors import BadInput, Forbidden
from promptship.services import (
    audit,
    checkpoints,
    decisions,
    deployments,
    drift,
    findings,
    gates,
    identities,
    outbox,
    queries,
    receipts,
    registry,
    requests,
    rollbacks,
    runs,
    soaks,
    tokens,
    traffic,
    verification,
)
from promptship.services.deps import Deps
from promptship.services.roles import GroupDirectory, RoleResolver
from promptship.services.views import (
    AuditEventView,
    DecisionOutcome,
    HistoryPage,
    IssuedToken,
    PromptStatus,
    PushResult,
    RequestView,
    RollbackResult,
    RunDetail,
    RuntimePrompt,
    RunView,
    SoakView,
    TokenView,
    VersionDetail,
    VersionDiff,
    VersionSummary,
)
from promptship.store.db import Database


def _acting(actor: Actor) -> Actor:
    if not actor.id.strip():
        raise BadInput("who is acting? pass --as USER or set PROMPTSHIP_USER")
    return actor


class Promptship:
    """The core, bound to a database, a policy, a clock and a group directory."""

    def __init__(
        self,
        db: Database,
        policy: Policy | None = None,
        clock: Clock | None = None,
        directory: GroupDirectory | None = None,
    ) -> None:
        self.db = db
        self.policy = policy or Policy()
        self.clock = clock or SystemClock()
        self.deps = Deps(clock=self.clock, policy=self.policy)
        self.roles = RoleResolver(self.policy, directory)

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
        """Issue a token to a person (Slack user ID; approve by default) or a service (write
        by default, never approve). Its secret is in the result and nowhere else."""
        scope = scope or (Scope.WRITE if service else Scope.APPROVE)
        async with self.db.transaction() as session:
            return await tokens.create(
                session, self.deps, subject=subject, service=service, scope=scope,
                actor=_acting(actor), name=name, expires_in=expires_in,
            )  # fmt: skip

    async def create_own_token(self, actor: Actor, scope: Scope | None = None) -> IssuedToken:
        """A verified person's token for themselves (``/prompt token``), for
        ``tokens.OWN_LIFETIME``; its scope follows ``tokens.own_scope``."""
        if not (actor.is_person and actor.verified and actor.proxy is None):
            raise Forbidden("only a person signed in through Slack gets a token for themselves")
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
            return await tokens.revoke(session, self.deps, ref, _acting(actor), owner=owner)

    async def authenticate_token(self, secret: str) -> tokens.TokenIdentity | None:
        """Who a stored API token speaks for; None when it is unknown, revoked or expired."""
        async with self.db.transaction() as session:
            return await tokens.authenticate(session, self.deps, secret)

    async def api_tokens_configured(self) -> bool:
        """Whether any stored token could authenticate now (then the API requires one)."""
        async with self.db.reader() as session:
            return await tokens.any_active(session, self.deps)

    # -- registry --------------------------------------------------------------------------

    async def push(self, spec: PromptSpec, actor: Actor) -> PushResult:
        async with self.db.transaction() as session:
            return await registry.push(session, self.deps, spec, _acting(actor))

    async def show(self, name: str, version: str | None = None) -> VersionDetail:
        async with self.db.reader() as session:
            if version is None:
                prompt = await registry.get_prompt(session, name)
                versions = await registry.versions_of(session, prompt.id)
                if not versions:
                    raise BadInput(f"{name} has no versions")
                version = versions[-1].version
            prompt, found = await registry.get_version(session, name, version)
            return await registry.detail(session, prompt, found)

    async def versions(self, name: str) -> list[VersionSummary]:
        async with self.db.reader() as session:
            return await queries.list_versions(session, name)

    async def diff(self, name: str, old: str, new: str) -> VersionDiff:
        async with self.db.reader() as session:
            _, a = await registry.get_version(session, name, old)
            _, b = await registry.get_version(session, name, new)
            return registry.diff(name, a, b)

    # -- promotions ------------------------------------------------------------------------

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
                _acting(actor),
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
                _acting(actor),
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
        roles = await self.roles.roles_of(_acting(actor).id)
        async with self.db.transaction() as session:
            return await decisions.record_decision(
                session, self.deps, request_id, actor, roles, True, comment, content_hash
            )

    async def reject(
        self, request_id: int, actor: Actor, reason: str, *, content_hash: str | None = None
    ) -> DecisionOutcome:
        roles = await self.roles.roles_of(_acting(actor).id)
        async with self.db.transaction() as session:
            return await decisions.record_decision(
                session, self.deps, request_id, actor, roles, False, reason, content_hash
            )

    async def cancel(self, request_id: int, actor: Actor) -> RequestView:
        roles = await self.roles.roles_of(_acting(actor).id)
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
        roles = await self.roles.roles_of(_acting(actor).id)
        async with self.db.transaction() as session:
            return await rollbacks.rollback(
                session, self.deps, name, environment, actor, roles, to_version, reason
            )

    async def archive(self, name: str, version: str, actor: Actor) -> str:
        async with self.db.transaction() as session:
            return await rollbacks.archive(session, self.deps, name, version, _acting(actor))

    # -- validation runs and soaks (the runner and scheduler record through these) --------

    async def start_validation_run(
        self,
        name: str,
        version: str,
        actor: Actor,
        total: int,
        *,
        owner: str | None = None,
        queued: bool = False,
    ) -> RunView:
        async with self.db.transaction() as session:
            return await runs.start_run(
                session,
                self.deps,
                name,
                version,
                _acting(actor),
                total,
                owner=owner,
                queued=queued,
            )

    async def queue_validation_run(self, name: str, version: str, actor: Actor) -> RunView:
        """Queue a run of the version's suite for a worker (Slack, the API)."""
        detail = await self.show(name, version)
        return await self.start_validation_run(name, version, actor, len(detail.tests), queued=True)

    async def claim_validation_run(self, owner: str, run_id: int | None = None) -> int | None:
        async with self.db.transaction() as session:
            return await runs.claim_queued(session, self.deps, owner, run_id)

    async def heartbeat_validation_run(
        self, run_id: int, owner: str, passed: int, failed: int, errored: int
    ) -> bool:
        async with self.db.transaction() as session:
            return await runs.heartbeat(session, self.deps, run_id, owner, passed, failed, errored)

    async def recover_interrupted_runs(self) -> list[int]:
        """Re-queue (once) or fail the runs whose worker died; their requests are told."""
        async with self.db.transaction() as session:
            return await findings.recover_stale(session, self.deps)

    async def validation_run_spec(self, run_id: int) -> runs.RunSpec:
        async with self.db.reader() as session:
            return await runs.run_spec(session, self.deps, run_id)

    async def validation_run(self, run_id: int) -> RunDetail:
        async with self.db.reader() as session:
            return await runs.run_detail(session, run_id)

    async def finish_validation_run(
        self,
        run_id: int,
        results: list[dict[str, Any]],
        actor: Actor = SYSTEM,
        regressions: list[str] | None = None,
        regression_override: str | None = None,
        *,
        error: str | None = None,
        owner: str | None = None,
    ) -> RunView:
        roles = await self.roles.roles_of(actor.id) if regression_override is not None else None
        async with self.db.transaction() as session:
            return await findings.finish_run(
                session,
                self.deps,
                run_id,
                results,
                actor,
                regressions or (),
                regression_override,
                error,
                owner,
                roles or frozenset(),
            )

    async def override_regressions(
        self, name: str, version: str, reason: str, actor: Actor
    ) -> RunView:
        """Accept a version's listed regressions: an authenticated approver's decision."""
        roles = await self.roles.roles_of(_acting(actor).id)
        async with self.db.transaction() as session:
            return await findings.override_regressions(
                session, self.deps, name, version, reason, actor, roles
            )

    async def record_validation_run(
        self,
        name: str,
        version: str,
        results: list[dict[str, Any]],
        actor: Actor,
        regressions: list[str] | None = None,
        regression_override: str | None = None,
    ) -> RunView:
        """Start and finish a run in one call (results computed elsewhere)."""
        if regression_override is not None:  # refused before a run is started, not after
            roles = await self.roles.roles_of(actor.id)
            findings.check_override(self.deps, actor, roles, f"{name} {version}")
        run = await self.start_validation_run(name, version, actor, len(results))
        return await self.finish_validation_run(
            run.id, results, actor, regressions, regression_override
        )

    async def stop_validation_run(
        self,
        run_id: int,
        actor: Actor,
        state: RunState = RunState.CANCELLED,
        why: str = "cancelled",
    ) -> RunView:
        async with self.db.transaction() as session:
            return await runs.stop_run(session, self.deps, run_id, actor, state, why)

    async def finish_soak(self, soak_id: int, passed: bool, failure: str | None = None) -> None:
        async with self.db.transaction() as session:
            await findings.finish_soak(session, self.deps, soak_id, passed, SYSTEM, failure)

    async def ingest_traffic(self, samples: list[Any]) -> traffic.IngestResult:
        """Store a batch of real queries (up to 1,000) for soaks to replay."""
        async with self.db.transaction() as session:
            return await traffic.ingest(session, self.deps, samples)

    async def running_soaks(self) -> list[soaks.SoakPlan]:
        async with self.db.reader() as session:
            return await soaks.running(session, self.deps)

    async def claim_soak_cycle(
        self, soak_id: int, cycle: int, owner: str, lease: timedelta
    ) -> bool:
        async with self.db.transaction() as session:
            return await soaks.claim(session, self.deps, soak_id, cycle, owner, lease)

    async def renew_soak_cycle(
        self, soak_id: int, cycle: int, owner: str, lease: timedelta
    ) -> bool:
        async with self.db.transaction() as session:
            return await soaks.renew(session, self.deps, soak_id, cycle, owner, lease)

    async def soak_cycle_spec(self, soak_id: int, cycle: int) -> soaks.CycleSpec:
        async with self.db.reader() as session:
            return await soaks.cycle_spec(session, self.deps, soak_id, cycle)

    async def finish_soak_cycle(
        self, spec: soaks.CycleSpec, owner: str, result: soaks.CycleResult
    ) -> str | None:
        async with self.db.transaction() as session:
            return await soaks.finish(session, self.deps, spec, owner, result)

    async def soak_cycles(self, soak_id: int) -> list[dict[str, Any]]:
        async with self.db.reader() as session:
            return [
                {
                    "cycle": c.cycle,
                    "state": c.state,
                    "sample_size": c.sample_size,
                    "divergent": c.divergent,
                    "errored": c.errored,
                    "rate": c.rate,
                    "model_calls": c.model_calls,
                    "attempts": c.attempts,
                    "owner": c.owner,
                    "finished_at": c.finished_at,
                    "details": c.details,
                }
                for c in await soaks.cycles(session, soak_id)
            ]

    async def start_drift_watch(self, key: str, owner: str) -> list[RunView]:
        """Claim the drift watch's tick ``key`` and queue a run of every production
        version's suite; another replica firing the same tick gets an empty list."""
        async with self.db.transaction() as session:
            return await drift.start_drift_watch(session, self.deps, key, owner)

    async def staging_soak_id(self, name: str, version: str) -> int | None:
        async with self.db.reader() as session:
            _, found = await registry.get_version(session, name, version)
            soak = await deployments.latest_soak(
                session, found.id, self.policy.environments.staging
            )
            return soak.id if soak else None

    # -- replay-safe commands ----------------------------------------------------------------

    async def receive_command(
        self, signed_at: str, raw_body: str, actor: Actor
    ) -> receipts.Receipt:
        """Claim the receipt of a signed command request (its timestamp header and raw body)
        before acting on it; ``first`` is False for a replay of a request already received."""
        key = receipts.fingerprint(signed_at, raw_body)
        async with self.db.transaction() as session:
            return await receipts.claim(session, self.clock, key, actor.id)

    # -- notifications (the Slack dispatcher delivers through these) ----------------------

    async def outbox_channels(self) -> list[str]:
        async with self.db.reader() as session:
            return await outbox.pending_channels(session, self.clock)

    async def lease_outbox_channel(self, channel: str, worker: str, seconds: float = 30.0) -> bool:
        async with self.db.transaction() as session:
            return await outbox.lease_channel(
                session, self.clock, channel, worker, timedelta(seconds=seconds)
            )

    async def renew_outbox_channel(self, channel: str, worker: str, seconds: float = 30.0) -> bool:
        async with self.db.transaction() as session:
            return await outbox.renew_channel(
                session, self.clock, channel, worker, timedelta(seconds=seconds)
            )

    async def release_outbox_channel(self, channel: str, worker: str) -> None:
        async with self.db.transaction() as session:
            await outbox.release_channel(session, channel, worker)

    async def due_notifications(self, channel: str, limit: int = 20) -> list[outbox.Delivery]:
        async with self.db.reader() as session:
            return await outbox.due(session, self.clock, channel, limit)

    async def notification_sent(
        self,
        delivery: outbox.Delivery,
        message_id: str | None,
        *,
        starts_thread: bool,
        replaces_parent: bool = False,
    ) -> None:
        async with self.db.transaction() as session:
            await outbox.mark_sent(
                session, self.clock, delivery, message_id, starts_thread, replaces_parent
            )

    async def notification_failed(
        self, delivery: outbox.Delivery, retry_in: float, error: str
    ) -> None:
        async with self.db.transaction() as session:
            await outbox.mark_retry(
                session, self.clock, delivery, timedelta(seconds=retry_in), error
            )

    async def notification_dead(self, delivery: outbox.Delivery, error: str) -> bool:
        """Set a notification aside (a dead letter) and alert its channel."""
        async with self.db.transaction() as session:
            return await outbox.mark_dead(session, self.clock, delivery, error)

    async def outbox_backlog(self) -> int:
        async with self.db.reader() as session:
            return await outbox.backlog(session)

    async def outbox_dead_letters(self) -> list[outbox.DeadLetter]:
        async with self.db.reader() as session:
            return await outbox.dead_letters(session)

    async def retry_dead_letters(
        self, ids: list[int] | None, actor: Actor
    ) -> list[outbox.DeadLetter]:
        """Put dead letters back in line (``None``: all of them)."""
        async with self.db.transaction() as session:
            return await outbox.retry_dead(session, self.clock, ids, actor)

    async def drop_dead_letter(self, id: int, actor: Actor) -> outbox.DeadLetter:
        async with self.db.transaction() as session:
            return await outbox.drop_dead(session, self.clock, id, actor)

    # -- questions -------------------------------------------------------------------------

    async def status(self, name: str | None = None) -> list[PromptStatus]:
        async with self.db.reader() as session:
            return await queries.status(session, self.deps, name)

    async def history(
        self, name: str, environment: str | None = None, before: int | None = None, limit: int = 20
    ) -> HistoryPage:
        async with self.db.reader() as session:
            return await queries.history(session, self.deps, name, environment, before, limit)

    async def soak_status(self, name: str) -> list[SoakView]:
        async with self.db.reader() as session:
            return await queries.soak_status(session, self.deps, name)

    async def recent_events(self, limit: int = 10) -> list[AuditEventView]:
        async with self.db.reader() as session:
            return await queries.recent_events(session, limit)

    async def runtime_prompt(self, name: str, environment: str) -> RuntimePrompt:
        async with self.db.reader() as session:
            return await queries.runtime_prompt(session, self.deps, name, environment)

    async def deployment_revisions(self) -> dict[tuple[str, str], int]:
        async with self.db.reader() as session:
            return await queries.deployment_revisions(session)

    async def metrics_snapshot(self) -> dict[str, Any]:
        async with self.db.reader() as session:
            return await queries.metrics_snapshot(session)

    async def deployment_file(self) -> dict[str, dict[str, dict[str, Any]]]:
        async with self.db.reader() as session:
            return await queries.deployment_file(session, self.deps)

    async def verify_audit(
        self, given: Sequence[checkpoints.Checkpoint] = ()
    ) -> audit.Verification:
        """Verify the chain, the stored checkpoints and those ``given`` (a file, the channel),
        and cross-check approvals, deployments and closed requests against the log."""
        async with self.db.reader() as session:
            return await verification.verify(session, given)

    async def audit_checkpoints(self, limit: int | None = None) -> list[checkpoints.Checkpoint]:
        """The stored checkpoints, oldest first (the newest ``limit``)."""
        async with self.db.reader() as session:
            return await checkpoints.stored(session, limit)

    async def checkpoint_audit(self, reason: str = "requested") -> checkpoints.Checkpoint | None:
        """Sign the chain's head now and post it to the channel (None while it is empty)."""
        async with self.db.transaction() as session:
            return await checkpoints.make(session, self.deps, reason)

    async def scheduled_audit_checkpoint(
        self, tick: str, owner: str
    ) -> checkpoints.Checkpoint | None:
        """The periodic checkpoint of tick ``tick``, made by one replica only."""
        async with self.db.transaction() as session:
            return await checkpoints.scheduled(session, self.deps, tick, owner)

    async def export_audit(self, fmt: str) -> AsyncIterator[str]:
        if fmt not in ("jsonl", "csv"):
            raise BadInput(f"unknown export format {fmt!r}", hint="use jsonl or csv")
        async with self.db.reader() as session:
            async for chunk in audit.export(session, fmt):
                yield chunk
