"""Validation runs, soaks, the drift watch and traffic (the runner and scheduler record
through these)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from promptship.domain.identity import SYSTEM, Actor
from promptship.domain.lifecycle import RunState
from promptship.services import (
    deployments,
    drift,
    findings,
    registry,
    runs,
    soak_claims,
    soak_restart,
    soak_samples,
    soaks,
    traffic,
)
from promptship.services.facade.registry import RegistryUseCases
from promptship.services.soak_spec import CycleResult, CycleSpec, Sample, SampleCursor
from promptship.services.views import RunDetail, RunView, SoakView


class RunUseCases(RegistryUseCases):
    """Validation runs, soak cycles, drift watch ticks and replayed traffic."""

    async def start_validation_run(
        self,
        name: str,
        version: str,
        actor: Actor,
        total: int | None = None,
        *,
        owner: str | None = None,
        queued: bool = False,
    ) -> RunView:
        """Record a new run of the version's suite (``total`` cases: by default the suite's),
        queued for a worker or running in ``owner``."""
        async with self.db.transaction() as session:
            return await runs.start_run(
                session,
                self.deps,
                name,
                version,
                self._acting(actor),
                total,
                owner=owner,
                queued=queued,
            )

    async def queue_validation_run(self, name: str, version: str, actor: Actor) -> RunView:
        """Queue a run of the version's suite for a worker (Slack, the API)."""
        return await self.start_validation_run(name, version, actor, queued=True)

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

    async def hand_back_validation_run(self, run_id: int, owner: str) -> RunView:
        """A worker shutting down puts its run back in the queue for the next worker."""
        async with self.db.transaction() as session:
            return await findings.hand_back(session, self.deps, run_id, owner)

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
        notes: Sequence[str] = (),
    ) -> RunView:
        """Record a run's results. ``notes`` say what the run did differently from the
        version's settings (a setting the provider refuses for the model, not sent)."""
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
                notes,
            )

    async def override_regressions(
        self, name: str, version: str, reason: str, actor: Actor, *, run_id: int | None = None
    ) -> RunView:
        """Accept the regressions of a version's run ``run_id`` (the one the approver
        weighed; refused when a later run replaced it): an authenticated approver's decision."""
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await findings.override_regressions(
                session, self.deps, name, version, reason, actor, roles, run_id
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
            async with self.db.reader() as session:
                prompt, row = await registry.get_version(session, name, version)
                await findings.check_impartial_override(session, self.deps, actor, prompt, row)
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

    async def restart_soak(self, name: str, actor: Actor, version: str | None = None) -> SoakView:
        """Start a fresh staging soak of the version staging runs (approvers only): the way
        on after a soak failed or ran short of traffic."""
        roles = await self.roles.roles_of(self._acting(actor).id)
        async with self.db.transaction() as session:
            return await soak_restart.restart(
                session, self.deps, name, version, self._acting(actor), roles
            )

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
            return await soak_claims.claim(session, self.deps, soak_id, cycle, owner, lease)

    async def renew_soak_cycle(
        self, soak_id: int, cycle: int, owner: str, lease: timedelta
    ) -> bool:
        async with self.db.transaction() as session:
            return await soak_claims.renew(session, self.deps, soak_id, cycle, owner, lease)

    async def fail_soak_cycle_attempt(
        self, soak_id: int, cycle: int, owner: str, error: str
    ) -> str | None:
        async with self.db.transaction() as session:
            return await soak_claims.fail_attempt(session, self.deps, soak_id, cycle, owner, error)

    async def hand_back_soak_cycle(self, soak_id: int, cycle: int, owner: str) -> bool:
        async with self.db.transaction() as session:
            return await soak_claims.hand_back(session, self.deps, soak_id, cycle, owner)

    async def soak_cycle_spec(self, soak_id: int, cycle: int) -> CycleSpec:
        async with self.db.reader() as session:
            return await soaks.cycle_spec(session, self.deps, soak_id, cycle)

    async def soak_sample_pages(
        self, spec: CycleSpec, size: int = soak_samples.PAGE
    ) -> AsyncIterator[list[Sample]]:
        """The cycle's samples, a page at a time: the suite inputs it holds, or its window
        of logged traffic read in short reads (no transaction spans the cycle)."""
        if spec.traffic is None:
            for start in range(0, len(spec.samples), size):
                yield spec.samples[start : start + size]
            return
        cursor: SampleCursor | None = None
        taken = 0
        while True:
            async with self.db.reader() as session:
                found, cursor = await soak_samples.page(session, spec.traffic, cursor, taken, size)
            if found:
                taken += len(found)
                yield found
            if cursor is None:
                return

    async def finish_soak_cycle(
        self, spec: CycleSpec, owner: str, result: CycleResult
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
