"""Questions about prompts and deployments: status, history, metrics."""

from __future__ import annotations

from typing import Any

from promptship.services import queries
from promptship.services.facade.base import UseCaseBase
from promptship.services.views import (
    AuditEventView,
    HistoryPage,
    PromptStatus,
    RuntimePrompt,
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
