"""The audit log: verification, signed checkpoints and export."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from promptship.errors import BadInput
from promptship.services import audit, checkpoints, verification
from promptship.services.facade.base import UseCaseBase


class AuditUseCases(UseCaseBase):
    """The hash-chained audit log."""

    async def verify_audit(
        self,
        given: Sequence[checkpoints.Checkpoint] = (),
        *,
        start: int | None = None,
        since_checkpoint: bool = False,
    ) -> audit.Verification:
        """Verify the chain, the stored checkpoints and those ``given`` (a file, the channel),
        and cross-check approvals, deployments and closed requests against the log. From
        event ``start`` on, or from the newest genuine stored checkpoint
        (``since_checkpoint``), only that range of the chain is checked."""
        async with self.db.reader() as session:
            return await verification.verify(
                session, given, start=start, since_checkpoint=since_checkpoint
            )

    async def verify_audit_tail(self) -> verification.TailCheck:
        """The chain from its newest signed checkpoint to its head, checked (or says it is
        too long to check on a page load): what the console shows."""
        async with self.db.reader() as session:
            return await verification.verify_tail(session)

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
