"""GitOps: applying a committed deployment file as the desired state."""

from __future__ import annotations

import asyncio

from promptship.domain.deployfile import parse_deployment_file
from promptship.domain.identity import Actor
from promptship.errors import PromptshipError
from promptship.services import apply, deployments, registry
from promptship.services.facade.promotions import PromotionUseCases
from promptship.services.views import ApplyChange, ApplyResult


class GitOpsUseCases(PromotionUseCases):
    """``promptship apply``: the file's versions become what runs, through the gates."""

    async def apply_deployments(
        self,
        text: str | bytes,
        source: str,
        actor: Actor,
        *,
        dry_run: bool = False,
        may_decide: bool = True,
    ) -> ApplyResult:
        """Plan (BadInput, naming lines, for a bad file or unknown prompts and versions:
        then nothing changes), then, unless ``dry_run``, make each planned move in its own
        transaction: dev at once, staging promotions and production requests through their
        gates, rollbacks only for an authenticated on-call or approver. A move refused on
        the way is reported as ``refused`` and the others still happen; one that finds the
        environment already running the version (another apply got there between the plan
        and the move) is ``unchanged``. ``may_decide`` is
        False for a token whose scope does not decide: its rollbacks are refused too."""
        who = self._acting(actor)
        # parsing a large file is CPU work: off the event loop, as a push's is
        entries = await asyncio.to_thread(
            parse_deployment_file, text, source, self.policy.environments.names
        )
        roles = await self.roles.roles_of(who.id)
        async with self.db.reader() as session:
            changes = await apply.plan(
                session, self.deps, source, entries, who, roles, may_decide=may_decide
            )
        if not dry_run:
            changes = [await self._perform(c, who, source) for c in changes]
        return ApplyResult(source=source, dry_run=dry_run, changes=changes)

    async def _perform(self, change: ApplyChange, actor: Actor, source: str) -> ApplyChange:
        if change.outcome != "planned":
            return change
        reason = f"applied from {source}"
        try:
            if change.action == "point":
                move = await self.point_dev(change.prompt, change.to_version, actor, reason)
                if not move.changed:
                    return _already(change)
                return change.model_copy(update={"outcome": "done", "detail": None})
            if change.action == "rollback":
                await self.rollback(
                    change.prompt, change.environment, actor, change.to_version, reason
                )
                return change.model_copy(update={"outcome": "done", "detail": None})
            request = await self.request_promotion(
                change.prompt,
                change.to_version,
                change.environment,
                actor,
                reason,
                queue_tests=True,
            )
        except PromptshipError as exc:
            if await self._runs(change.prompt, change.environment, change.to_version):
                return _already(change)
            detail = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            return change.model_copy(update={"outcome": "refused", "detail": detail})
        waiting = [f"{c.gate}: {c.detail}" for c in request.checks if c.state != "passed"]
        return change.model_copy(
            update={
                "outcome": "done" if request.state == "promoted" else "opened",
                "detail": "; ".join(waiting) or None,
                "request": request.code,
            }
        )

    async def _runs(self, name: str, environment: str, version: str) -> bool:
        """Whether ``environment`` runs ``version`` of ``name`` now."""
        async with self.db.reader() as session:
            prompt = await registry.get_prompt(session, name)
            current = await deployments.live_version(session, prompt.id, environment)
            return current is not None and current.version == version


def _already(change: ApplyChange) -> ApplyChange:
    """The move found its desired state already there: nothing for this apply to do."""
    return change.model_copy(
        update={
            "outcome": "unchanged",
            "detail": f"{change.environment} runs {change.to_version} (applied meanwhile)",
        }
    )
