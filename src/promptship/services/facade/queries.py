"""Questions about prompts and deployments: status, history, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from promptship.services import browse, overview, queries
from promptship.services.facade.base import UseCaseBase
from promptship.services.views import (
    AuditEventView,
    AuditPage,
    HistoryPage,
    PromptStatus,
    RuntimePrompt,
    SoakDetail,
    SoakView,
)


class QueryUseCases(UseCaseBase):
    """Read-only questions."""

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

    async def last_audit_seq(self) -> int:
        async with self.db.reader() as session:
            return await queries.last_audit_seq(session)

    async def metrics_snapshot(self) -> dict[str, Any]:
        async with self.db.reader() as session:
            return await queries.metrics_snapshot(session)

    async def deployment_file(self) -> dict[str, dict[str, dict[str, Any]]]:
        async with self.db.reader() as session:
            return await queries.deployment_file(session, self.deps)

    async def soak_detail(self, soak_id: int) -> SoakDetail:
        async with self.db.reader() as session:
            return await browse.soak_detail(session, self.deps, soak_id)

    async def audit_page(self, found: browse.AuditFilter, before: int | None = None) -> AuditPage:
        async with self.db.reader() as session:
            return await browse.audit_page(session, found, before)

    async def audit_lines(self, found: browse.AuditFilter) -> AsyncIterator[str]:
        async with self.db.reader() as session:
            async for chunk in browse.audit_lines(session, found):
                yield chunk

    async def request_events(self, request_id: int) -> list[AuditEventView]:
        async with self.db.reader() as session:
            return await browse.request_events(session, request_id)

    async def overview_page(
        self, query: str = "", after: str | None = None, limit: int = overview.PAGE
    ) -> overview.OverviewPage:
        """A page of prompts for the console's overview, open requests and running soaks."""
        async with self.db.reader() as session:
            return await overview.overview_page(session, self.deps, query, after, limit)

    async def replicas_seen(self, since: datetime) -> list[browse.Replica]:
        async with self.db.reader() as session:
            return await browse.replicas_seen(session, since)

    async def recent_jobs(self) -> list[browse.JobRun]:
        async with self.db.reader() as session:
            return [
                browse.JobRun(j.key, j.owner, j.claimed_at, j.done_at)
                for j in await browse.recent_jobs(session)
            ]
