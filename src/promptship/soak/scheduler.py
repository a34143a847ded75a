"""The scheduler: APScheduler triggers, the store decides.

Every replica runs an ``AsyncIOScheduler`` with an in-memory job store, rebuilt from our
own tables: one job per running soak at its next due time, the nightly drift watch, the
hourly signed audit checkpoint (claimed once across replicas by its tick), and a
``reconcile`` job every few seconds that picks up soaks started by other replicas, cycles
whose claim ran out (a replica died mid-cycle) and ticks missed while everything was down.
Whatever fires, a cycle runs only for the replica whose insert of ``(soak id, cycle)``
succeeded, or that took an expired lease over; so double fires record once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult, CycleSpec
from promptship.services.soaks import SoakPlan
from promptship.worker import worker_id

log = logging.getLogger("promptship.scheduler")

#: how often the chain's head is signed and posted (every replica fires; one claims it)
CHECKPOINT_EVERY = timedelta(hours=1)
#: interval ticks count from here, so replicas fire on the same instants
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

CycleRunner = Callable[[CycleSpec], Awaitable[CycleResult]]


class Scheduler:
    def __init__(
        self,
        core: Promptship,
        run_cycle: CycleRunner,
        *,
        owner: str | None = None,
        lease: timedelta = timedelta(seconds=60),
        reconcile_every: float = 15.0,
        checkpoint_every: timedelta = CHECKPOINT_EVERY,
    ) -> None:
        self.core = core
        self.run_cycle = run_cycle
        self.owner = owner or worker_id()
        self.lease = lease
        self.reconcile_every = reconcile_every
        self.checkpoint_every = checkpoint_every
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._running: dict[tuple[int, int], asyncio.Task[None]] = {}
        #: the jobs APScheduler is running now; its shutdown cancels them but cannot wait
        self._jobs: set[asyncio.Task[Any]] = set()
        self.alive = False
        #: set by the server on a planned shutdown: a cycle cut short is handed back without
        #: using one of its attempts (a crash still uses one)
        self.shutting_down = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.scheduler.add_job(
            self._job(self.reconcile),
            IntervalTrigger(seconds=self.reconcile_every),
            id="reconcile",
            next_run_time=self.core.clock.now(),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        drift = self.core.policy.drift_watch
        if drift:
            self.scheduler.add_job(
                self._job(self.drift_watch),
                CronTrigger.from_crontab(drift, timezone="UTC"),
                id="drift-watch",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=3600,
            )
        self.scheduler.add_job(
            self._job(self.audit_checkpoint),
            IntervalTrigger(seconds=self.checkpoint_every.total_seconds(), start_date=EPOCH),
            id="audit-checkpoint",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=600,
        )
        self.scheduler.start()
        self.alive = True

    async def stop(self) -> None:
        """Stop firing, and end what runs now (a reconcile, a cycle) before returning: nothing
        of ours touches the database after this."""
        self.alive = False
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for tasks in (self._jobs, self._running.values()):  # jobs first: they start cycles
            pending = list(tasks)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _job(self, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """``job`` as APScheduler runs it, tracked so that ``stop`` can wait for it."""

        async def tracked() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._jobs.add(task)
            try:
                await job()
            finally:
                self._jobs.discard(task)

        return tracked

    async def run_forever(self) -> None:
        """For the server's background tasks: run until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- jobs --------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Rebuild the soak jobs from the store and run whatever is due and unclaimed."""
        try:
            plans = await self.core.running_soaks()
        except Exception:
            log.exception("could not read the running soaks")
            return
        now = self.core.clock.now()
        wanted = set()
        for soak in plans:
            job_id = f"soak-{soak.soak_id}"
            wanted.add(job_id)
            due = soak.due_cycle(now)
            for cycle in soak.abandoned:  # a replica died mid-cycle: take it over
                if cycle != due:
                    await self.tick(soak, cycle)
            if due >= 1:
                await self.tick(soak, due)
            following = min(due + 1, soak.cycles)
            if following > due:
                self.scheduler.add_job(
                    self._job(
                        self.reconcile
                    ),  # a soak's due time came: run its cycle, plan the next
                    DateTrigger(run_date=soak.due_at(following)),
                    id=job_id,
                    replace_existing=True,
                    misfire_grace_time=None,
                )
        for job in self.scheduler.get_jobs():
            if job.id.startswith("soak-") and job.id not in wanted:
                job.remove()

    async def tick(self, soak: SoakPlan, cycle: int) -> None:
        key = (soak.soak_id, cycle)
        if any(sid == soak.soak_id and not t.done() for (sid, _), t in self._running.items()):
            return  # one cycle of a soak at a time here; the next due one runs after it
        if not await self.core.claim_soak_cycle(soak.soak_id, cycle, self.owner, self.lease):
            return
        log.info(
            "running cycle %d of soak %d (%s %s)", cycle, soak.soak_id, soak.prompt, soak.version
        )
        self._running[key] = asyncio.create_task(self._run(soak, cycle))

    async def _run(self, soak: SoakPlan, cycle: int) -> None:
        key = (soak.soak_id, cycle)
        renewal = asyncio.create_task(self._keep_lease(soak.soak_id, cycle))
        failure: str | None = None
        handing_back = False
        try:
            spec = await self.core.soak_cycle_spec(soak.soak_id, cycle)
            result = await self.run_cycle(spec)
            state = await self.core.finish_soak_cycle(spec, self.owner, result)
            log.info("cycle %d of soak %d: %s", cycle, soak.soak_id, state or "already recorded")
        except asyncio.CancelledError:
            handing_back = self.shutting_down
            raise
        except Exception as exc:
            log.exception("cycle %d of soak %d failed", cycle, soak.soak_id)
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            renewal.cancel()
            await asyncio.wait([renewal])  # a renewal in flight ends before the cycle does
            try:
                if failure is not None:  # after the renewal: it would hold the cycle again
                    await self._record_failure(soak, cycle, failure)
                if handing_back:
                    await asyncio.shield(self._hand_back(soak, cycle))
            finally:
                self._running.pop(key, None)

    async def _record_failure(self, soak: SoakPlan, cycle: int, error: str) -> None:
        """Free the cycle for another attempt, or, its attempts used up, record it as errored
        (the soak fails). If even that fails, its lease runs out and a claim decides."""
        try:
            state = await self.core.fail_soak_cycle_attempt(soak.soak_id, cycle, self.owner, error)
        except Exception:
            log.exception(
                "could not record the failure of cycle %d of soak %d", cycle, soak.soak_id
            )
            return
        if state is None:
            log.warning("cycle %d of soak %d will be retried", cycle, soak.soak_id)
        else:
            log.error("cycle %d of soak %d gave up: %s", cycle, soak.soak_id, state)

    async def _hand_back(self, soak: SoakPlan, cycle: int) -> None:
        """Give a cycle cut short by our shutdown to the next replica, attempt uncounted. If
        that fails, its lease runs out and the takeover counts, as after a crash."""
        try:
            if await self.core.hand_back_soak_cycle(soak.soak_id, cycle, self.owner):
                log.info("cycle %d of soak %d handed back on shutdown", cycle, soak.soak_id)
        except Exception:
            log.exception("could not hand back cycle %d of soak %d", cycle, soak.soak_id)

    async def _keep_lease(self, soak_id: int, cycle: int) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                if not await self.core.renew_soak_cycle(soak_id, cycle, self.owner, self.lease):
                    return
            except Exception:
                log.exception("could not renew the lease of cycle %d of soak %d", cycle, soak_id)

    async def drift_watch(self) -> None:
        """Re-run each production version's suite; a pass rate under the gate alerts."""
        fire_time = self.core.clock.now().replace(second=0, microsecond=0)
        queued = await self.core.start_drift_watch(f"drift:{fire_time.isoformat()}", self.owner)
        if queued:
            log.info("drift watch queued %d run(s)", len(queued))

    async def audit_checkpoint(self) -> None:
        """Sign the audit chain's head; replicas firing the same tick make one checkpoint."""
        now = self.core.clock.now()
        every = self.checkpoint_every.total_seconds()
        tick = EPOCH + timedelta(seconds=(now - EPOCH).total_seconds() // every * every)
        made = await self.core.scheduled_audit_checkpoint(
            f"audit-checkpoint:{tick.isoformat()}", self.owner
        )
        if made is not None:
            log.info("audit checkpoint at event %d", made.seq)
