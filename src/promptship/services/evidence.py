"""The evidence a promotion request carries: what production runs now, the version's tests
and regressions (and who overrode them, why), its staging soak, and the system prompt's
changed lines against production. Short by construction: it travels in every notification
of the request."""

from __future__ import annotations

import asyncio
import functools
from itertools import zip_longest

from sqlalchemy.ext.asyncio import AsyncSession

from promptship.domain import linediff
from promptship.domain.lifecycle import RequestKind, soak_cycles
from promptship.services import audit, deployments, registry
from promptship.services.deps import Deps
from promptship.services.views import (
    DiffEvidence,
    RequestEvidence,
    SoakEvidence,
    TestsEvidence,
)
from promptship.store.models import (
    PromotionRequest,
    Prompt,
    PromptVersion,
    ValidationRun,
)

#: changed lines (and hunk headers) a request shows; the rest is one command away
DIFF_LINES = 40
#: characters of one diff line
DIFF_LINE_CHARS = 200
#: changed lines (after the common start and end are set aside) a request diffs at most on
#: either side; a larger change is "too large to show here" (``/prompt diff`` shows it)
DIFF_MAX_LINES = 5000
#: characters of the changed region a request diffs at most on either side
DIFF_MAX_CHARS = 250_000
#: lines between two anchors (lines found once on each side) diffed line by line at most
DIFF_GAP_LINES = 100
#: regressions listed by name
REGRESSIONS_SHOWN = 10
#: characters of one regression's name
REGRESSION_CHARS = 200
#: times a request's tests may be run again ("Re-run tests"): a version that keeps failing
#: needs a fix, not more runs
MAX_RERUNS = 3
#: the signed event of one re-run; the count of them is the request's
RERUN_ACTION = "request.tests_rerun"


async def reruns_of(session: AsyncSession, request_id: int) -> int:
    """How many times the tests of request ``request_id`` were run again."""
    return len(await audit.signed_events(session, request_id, [RERUN_ACTION]))


async def gather(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    request: PromotionRequest,
) -> RequestEvidence:
    envs = deps.policy.environments
    production = await deployments.live_version(session, prompt.id, envs.production)
    soak = None
    if request.environment == envs.production and request.kind == RequestKind.NORMAL:
        row = await deployments.latest_soak(session, version.id, envs.staging)
        if row is not None:
            soak = SoakEvidence(
                state=row.state,
                cycles_done=row.cycles_done,
                cycles_total=soak_cycles(
                    row.ends_at - row.started_at, envs.production_policy.soak_interval
                ),
                worst_divergence=row.worst_divergence,
                max_divergence=envs.production_policy.max_divergence,
                started_at=row.started_at,
                ends_at=row.ends_at,
                failure=row.failure,
            )
    diff = None
    if production is not None and production.id != version.id:
        # off the event loop: a long prompt's diff must not stall every other request
        diff = await asyncio.to_thread(
            prompt_diff,
            production.version,
            registry.reviewed_text(production),
            registry.reviewed_text(version),
        )
    run = await registry.latest_run(session, version)
    tests = await _tests(session, deps, prompt, version, run) if run is not None else None
    if tests is not None and (
        request.environment == envs.staging or request.kind == RequestKind.BREAKGLASS
    ):  # a request that waits on tests: which of its runs this is
        tests = tests.model_copy(
            update={
                "run_number": 1 + await reruns_of(session, request.id),
                "max_runs": 1 + MAX_RERUNS,
            }
        )
    return RequestEvidence(
        as_of=deps.clock.now(),
        into_production=request.environment == envs.production,
        production_version=production.version if production is not None else None,
        tests=tests,
        soak=soak,
        diff=diff,
    )


@functools.lru_cache(maxsize=64)  # every view of a request re-reads it: diff each pair once
def prompt_diff(against: str, old: str, new: str) -> DiffEvidence:
    """The changed lines of ``new`` against ``old``: a ``@@ line N @@`` header per change,
    then each replaced line beside its replacement (``-`` then ``+``), no context lines; the
    first :data:`DIFF_LINES` of them, each cut at :data:`DIFF_LINE_CHARS`.

    Bounded whatever the input (see :func:`promptship.domain.linediff.changes`); a changed region over
    :data:`DIFF_MAX_LINES` lines or :data:`DIFF_MAX_CHARS` characters on either side is not
    diffed here (``too_large``; its counts are the region's lines)."""
    start, a, b = linediff.changed_region(old.splitlines(), new.splitlines())
    if max(len(a), len(b)) > DIFF_MAX_LINES or max(_chars(a), _chars(b)) > DIFF_MAX_CHARS:
        return DiffEvidence(against=against, lines=[], added=len(b), removed=len(a), too_large=True)
    lines: list[str] = []
    added = removed = 0
    for i1, i2, j1, j2 in linediff.changes(a, b, DIFF_GAP_LINES):
        removed += i2 - i1
        added += j2 - j1
        if len(lines) >= DIFF_LINES:
            continue
        lines.append(f"@@ line {start + i1 + 1} @@")
        for gone, came in zip_longest(a[i1:i2], b[j1:j2]):
            if gone is not None:
                lines.append(_cut(f"-{gone}"))
            if came is not None:
                lines.append(_cut(f"+{came}"))
            if len(lines) >= DIFF_LINES:
                break
    return DiffEvidence(against=against, lines=lines[:DIFF_LINES], added=added, removed=removed)


def _chars(lines: list[str]) -> int:
    return sum(len(x) for x in lines)


def _cut(line: str) -> str:
    return line if len(line) <= DIFF_LINE_CHARS else line[: DIFF_LINE_CHARS - 1] + "…"


async def _tests(
    session: AsyncSession,
    deps: Deps,
    prompt: Prompt,
    version: PromptVersion,
    run: ValidationRun,
) -> TestsEvidence:
    by, reason = await signed_override(session, prompt, version, run)
    return TestsEvidence(
        state=run.state,
        passed=run.passed,
        total=run.total,
        failed=run.failed,
        errored=run.errored,
        pass_rate=run.pass_rate,
        min_pass_rate=deps.policy.environments.staging_policy.min_pass_rate,
        regressions=[r[:REGRESSION_CHARS] for r in run.regressions[:REGRESSIONS_SHOWN]],
        regression_count=len(run.regressions),
        override_reason=reason,
        override_by=by,
        run_id=run.id,
    )


async def signed_override(
    session: AsyncSession, prompt: Prompt, version: PromptVersion, run: ValidationRun
) -> tuple[str | None, str | None]:
    """Who accepted the run's regressions and why, as the signed audit events record it
    (an override given with the results, or a later one); (None, None) when nobody did."""
    if not run.regression_override:
        return None, None
    by = reason = None
    for e in await audit.signed_run_events(session, prompt.name, version.version, run.id):
        given = e.details.get(
            "reason" if e.action == audit.RUN_OVERRIDDEN else "regression_override"
        )
        if isinstance(given, str) and given:
            by, reason = e.actor, given
    return by, reason
