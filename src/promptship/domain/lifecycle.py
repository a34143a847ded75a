"""The promotion state machine, as data.

``TRANSITIONS`` is the whole lifecycle of a prompt version on one screen: which status may
move to which, by what move, behind which gates. Gates are pure functions of ``GateFacts``
and return a ``GateCheck`` that says why, never a bare ``False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from promptship.durations import format_duration
from promptship.errors import GateRefused


class VersionStatus(StrEnum):
    DRAFT = "draft"
    TESTING = "testing"
    STAGING = "staging"
    PRODUCTION = "production"
    DEPRECATED = "deprecated"
    ARCHIVED = "archived"
    REVERTED = "reverted"


class Move(StrEnum):
    """What causes a transition."""

    START_TESTS = "start-tests"  # a validation run starts
    FINISH_TESTS = "finish-tests"  # a run ended without a promotion waiting on it
    PROMOTE = "promote"  # a normal promotion request whose gates all passed
    BREAKGLASS = "breakglass"  # an emergency promotion straight to production
    REPLACE = "replace"  # another version took this one's environment
    ROLLBACK = "rollback"  # on-call reverted the active version of an environment
    RESTORE = "restore"  # a rollback put this (earlier) version back
    ARCHIVE = "archive"
    POINT = "point"  # dev pointed at a version: no gates, no change of status
    FOLLOW = "follow-latest"  # dev followed a newly pushed version


class GateState(StrEnum):
    PASSED = "passed"
    WAITING = "waiting"  # may still pass: approvals to come, a soak or a run under way
    FAILED = "failed"  # cannot pass as things stand


class RequestKind(StrEnum):
    NORMAL = "normal"
    BREAKGLASS = "breakglass"


class RequestState(StrEnum):
    OPEN = "open"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    FAILED = "failed"  # a gate it waited on failed (tests, soak)

    @property
    def is_open(self) -> bool:
        return self is RequestState.OPEN


class RunState(StrEnum):
    QUEUED = "queued"  # waiting for a worker to claim it
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self in (RunState.PASSED, RunState.FAILED)

    @property
    def active(self) -> bool:
        return self in (RunState.QUEUED, RunState.RUNNING)


@dataclass(frozen=True)
class RunSummary:
    """What a gate needs to know of a validation run."""

    run_id: int
    state: RunState
    pass_rate: float | None
    total: int
    passed: int
    failed: int
    errored: int
    regressions: tuple[str, ...] = ()
    regression_override: str | None = None
    error: str | None = None  # the run could not run at all (e.g. no provider key)
    attempts: int = 0  # times a worker started it; a re-queued run was started before


@dataclass(frozen=True)
class SoakSummary:
    soak_id: int
    state: str  # running, passed, failed, insufficient-traffic, cancelled
    started_at: datetime
    ends_at: datetime
    cycles_done: int
    worst_divergence: float | None
    failure: str | None = None
    #: how many cycles the soak runs in all (0: not known)
    cycles_total: int = 0


def soak_cycles(length: timedelta, interval: timedelta) -> int:
    """How many cycles a soak of ``length`` checked every ``interval`` runs: at least one."""
    if interval <= timedelta(0) or length <= timedelta(0):
        return 1
    return max(1, math.ceil(length / interval))


def clock_time(at: datetime, now: datetime) -> str:
    """A time as people read it: ``14:00 UTC`` today, ``Jan 02 14:00 UTC`` another day,
    with seconds only when it falls between minutes (soaks of seconds, in tests)."""
    shown = f"{at:%H:%M:%S}" if at.second else f"{at:%H:%M}"
    day = "" if at.date() == now.date() else f"{at:%b %d} "
    return f"{day}{shown} UTC"


def soak_progress(soak: SoakSummary, now: datetime) -> str:
    """A running soak in human units: ``soaking: cycle 7 of 24, worst divergence 3%, ends
    14:00 UTC``."""
    of = f" of {soak.cycles_total}" if soak.cycles_total else ""
    worst = (
        "" if soak.worst_divergence is None else f", worst divergence {soak.worst_divergence:.0%}"
    )
    ends = clock_time(soak.ends_at, now)
    if not soak.cycles_done:
        return f"soaking: no cycle done yet{of}, ends {ends}"
    return f"soaking: cycle {soak.cycles_done}{of}{worst}, ends {ends}"


@dataclass(frozen=True)
class Decision:
    user: str
    approve: bool
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GateFacts:
    """Everything gates read. Built by the services from the store; gates do no I/O."""

    label: str  # "customer-support 2.2.0"
    status: VersionStatus
    target: str  # environment name
    now: datetime
    min_pass_rate: float = 0.8
    regression_check: bool = True
    run: RunSummary | None = None
    #: who overrode the run's regressions and how they are party to the request
    #: ("U01 requested req-3"): their override does not count for it
    override_refused: str | None = None
    required_approvals: int = 0
    decisions: tuple[Decision, ...] = ()
    soak_required: timedelta = timedelta(0)
    soak: SoakSummary | None = None
    stakeholders_configured: bool = False
    reason: str | None = None
    #: the prompt's name, for the commands a gate names ("customer-support")
    prompt: str = ""


@dataclass(frozen=True)
class GateCheck:
    gate: str
    state: GateState
    detail: str

    @property
    def passed(self) -> bool:
        return self.state is GateState.PASSED


Gate = Callable[[GateFacts], GateCheck]


def tests_gate(f: GateFacts) -> GateCheck:
    name = "tests"
    run = f.run
    if run is None:
        return GateCheck(
            name, GateState.FAILED, f"{f.label} has no test run: run its tests before {f.target}"
        )
    if run.state is RunState.QUEUED:
        if run.attempts:
            return GateCheck(
                name, GateState.WAITING, f"tests re-queued after a restart ({run.total} cases)"
            )
        return GateCheck(name, GateState.WAITING, f"tests queued ({run.total} cases)")
    if run.state is RunState.RUNNING:
        done = run.passed + run.failed + run.errored
        again = " again after a restart" if run.attempts > 1 else ""
        return GateCheck(
            name, GateState.WAITING, f"tests running{again} ({done}/{run.total} cases)"
        )
    if run.state in (RunState.CANCELLED, RunState.INTERRUPTED):
        return GateCheck(
            name, GateState.FAILED, f"the last test run was {run.state.value}: run the tests again"
        )
    if run.error and run.total == 0:
        return GateCheck(name, GateState.FAILED, f"the test run could not start: {run.error}")
    rate = run.pass_rate or 0.0
    counts = f"{run.passed} passed, {run.failed} failed, {run.errored} errored"
    if run.total == 0:
        return GateCheck(name, GateState.FAILED, f"{f.label} has no test cases: add tests: to it")
    if rate < f.min_pass_rate:
        return GateCheck(
            name,
            GateState.FAILED,
            f"pass rate {rate:.0%} is below the required {f.min_pass_rate:.0%} ({counts})",
        )
    if run.state is not RunState.PASSED:
        # a run is judged once, when it finishes: its numbers alone never open the gate
        return GateCheck(
            name, GateState.FAILED, f"the last test run failed ({counts}): run the tests again"
        )
    return GateCheck(
        name, GateState.PASSED, f"pass rate {rate:.0%} ≥ {f.min_pass_rate:.0%} ({counts})"
    )


def regression_gate(f: GateFacts) -> GateCheck:
    name = "regressions"
    run = f.run
    if not f.regression_check or run is None or not run.regressions:
        return GateCheck(name, GateState.PASSED, "no case that passes in production fails here")
    if run.regression_override and f.override_refused:
        return GateCheck(
            name,
            GateState.FAILED,
            f"{len(run.regressions)} regression(s) overridden, but {f.override_refused}: "
            "someone else must override them",
        )
    if run.regression_override:
        return GateCheck(
            name,
            GateState.PASSED,
            f"{len(run.regressions)} regression(s) overridden: {run.regression_override}",
        )
    shown = "; ".join(run.regressions[:3]) + (" …" if len(run.regressions) > 3 else "")
    return GateCheck(
        name,
        GateState.FAILED,
        f"{len(run.regressions)} case(s) pass on production and fail here ({shown}): "
        "fix them, or override with a reason",
    )


def approvals_gate(f: GateFacts) -> GateCheck:
    name = "approvals"
    approvers = [d.user for d in f.decisions if d.approve and "approvers" in d.roles]
    have, need = len(approvers), f.required_approvals
    who = f" ({', '.join(approvers)})" if approvers else ""
    state = GateState.PASSED if have >= need else GateState.WAITING
    return GateCheck(name, state, f"{min(have, need) if need else have}/{need} approvals{who}")


def soak_gate(f: GateFacts) -> GateCheck:
    name = "soak"
    if f.soak_required <= timedelta(0):
        return GateCheck(name, GateState.PASSED, "no staging soak required")
    soak = f.soak
    length = format_duration(f.soak_required)
    if soak is None or soak.state == "cancelled":
        # a cancelled soak never resumes (its version left staging, or it was restarted):
        # only a restart soaks the version again, so the gate says how
        why = f" (the last one was cancelled: {soak.failure})" if soak and soak.failure else ""
        start = f": start one with {soak_restart_commands(f.prompt)}" if f.prompt else ""
        return GateCheck(
            name, GateState.WAITING, f"staging soak of {length} not started{why}{start}"
        )
    if soak.state == "passed":
        return GateCheck(
            name, GateState.PASSED, f"soaked {length} in staging, every cycle in limits"
        )
    if soak.state in ("failed", "insufficient-traffic"):
        return GateCheck(
            name, GateState.FAILED, f"staging soak failed: {soak.failure or 'diverged'}"
        )
    return GateCheck(name, GateState.WAITING, soak_progress(soak, f.now))


def soak_restart_commands(prompt: str) -> str:
    """How a person soaks the staging version of ``prompt`` afresh, from the CLI or Slack."""
    return f"promptship soak restart {prompt} or /prompt soak restart {prompt}"


def soak_next_steps(
    prompt: str, version: str, *, insufficient: bool, breakglass: bool = False
) -> str:
    """What to do after a soak failed or ran short of traffic: every surface that reports
    the failure (gate, Slack, CLI) shows this, so no failed soak is a dead end."""
    log = (
        "log production traffic with the client (prompts.log_traffic(...), "
        "POST /v1/traffic or promptship traffic import)"
    )
    if breakglass:  # production already runs it (or was rolled back): no staging soak to redo
        if insufficient:
            return (
                f"Next: {log} so it meets real queries; if in doubt, roll back: "
                f"/prompt rollback {prompt} production."
            )
        return "Next: push a fixed version and promote it through staging."
    restart = soak_restart_commands(prompt)
    emergency = f"in an emergency, break-glass: /prompt breakglass {prompt} {version} REASON"
    if insufficient:
        return f"Next: {log}, then restart the soak: {restart}; {emergency}."
    return (
        "Next: check the worst answers and push a fixed version, or, if production traffic "
        f"changed, restart the soak: {restart}; {emergency}."
    )


def stakeholder_gate(f: GateFacts) -> GateCheck:
    name = "stakeholder sign-off"
    if not f.stakeholders_configured:
        return GateCheck(name, GateState.PASSED, "no stakeholders configured")
    signed = [d.user for d in f.decisions if d.approve and "stakeholders" in d.roles]
    if signed:
        return GateCheck(name, GateState.PASSED, f"signed off by {', '.join(signed)}")
    return GateCheck(name, GateState.WAITING, "waiting for a stakeholder's sign-off")


def reason_gate(f: GateFacts) -> GateCheck:
    if f.reason and f.reason.strip():
        return GateCheck("reason", GateState.PASSED, f.reason.strip())
    return GateCheck("reason", GateState.FAILED, "break-glass needs a written reason")


@dataclass(frozen=True)
class Transition:
    source: VersionStatus
    target: VersionStatus
    move: Move
    gates: tuple[Gate, ...] = field(default=())


S = VersionStatus
TESTED = (tests_gate, regression_gate)

TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.DRAFT, S.TESTING, Move.START_TESTS),
    Transition(S.TESTING, S.DRAFT, Move.FINISH_TESTS),
    Transition(S.DRAFT, S.STAGING, Move.PROMOTE, TESTED),
    Transition(S.TESTING, S.STAGING, Move.PROMOTE, TESTED),
    Transition(
        S.STAGING, S.PRODUCTION, Move.PROMOTE, (approvals_gate, soak_gate, stakeholder_gate)
    ),
    Transition(S.DRAFT, S.PRODUCTION, Move.BREAKGLASS, (*TESTED, reason_gate, approvals_gate)),
    Transition(S.TESTING, S.PRODUCTION, Move.BREAKGLASS, (*TESTED, reason_gate, approvals_gate)),
    Transition(S.STAGING, S.PRODUCTION, Move.BREAKGLASS, (*TESTED, reason_gate, approvals_gate)),
    Transition(S.STAGING, S.DEPRECATED, Move.REPLACE),
    Transition(S.PRODUCTION, S.DEPRECATED, Move.REPLACE),
    Transition(S.STAGING, S.REVERTED, Move.ROLLBACK),
    Transition(S.PRODUCTION, S.REVERTED, Move.ROLLBACK),
    Transition(S.DEPRECATED, S.STAGING, Move.RESTORE),
    Transition(S.REVERTED, S.STAGING, Move.RESTORE),
    Transition(S.DEPRECATED, S.PRODUCTION, Move.RESTORE),
    Transition(S.REVERTED, S.PRODUCTION, Move.RESTORE),
    # rolled back to in production while it is the staging version (it ran there before)
    Transition(S.STAGING, S.PRODUCTION, Move.RESTORE),
    Transition(S.DEPRECATED, S.ARCHIVED, Move.ARCHIVE),
    Transition(S.REVERTED, S.ARCHIVED, Move.ARCHIVE),
)

_BY_KEY = {(t.source, t.target, t.move): t for t in TRANSITIONS}

# What to do instead, when a version's status has no transition to the target.
_REMEDY = {
    (S.DRAFT, S.PRODUCTION): "promote it to staging first, or use break-glass in an emergency",
    (S.TESTING, S.PRODUCTION): "promote it to staging first, or use break-glass in an emergency",
    (S.PRODUCTION, S.STAGING): "it is already in production",
    (S.PRODUCTION, S.PRODUCTION): "it is already in production",
    (S.STAGING, S.STAGING): "it is already in staging",
    (
        S.DEPRECATED,
        S.PRODUCTION,
    ): "it was replaced; roll back to it if it is older, or push a new version",
    (S.DEPRECATED, S.STAGING): "it was replaced; push a new version",
    (S.REVERTED, S.PRODUCTION): "it was rolled back; push a fixed version",
    (S.REVERTED, S.STAGING): "it was rolled back; push a fixed version",
    (S.ARCHIVED, S.STAGING): "it is archived; push a new version",
    (S.ARCHIVED, S.PRODUCTION): "it is archived; push a new version",
}


def find_transition(source: VersionStatus, target: VersionStatus, move: Move) -> Transition | None:
    return _BY_KEY.get((source, target, move))


def require_transition(
    label: str, source: VersionStatus, target: VersionStatus, move: Move, env: str | None = None
) -> Transition:
    """The transition, or GateRefused naming the state and what would be allowed instead."""
    found = find_transition(source, target, move)
    if found is not None:
        return found
    remedy = _REMEDY.get((source, target))
    where = env or target.value
    message = f"{label} is {source.value}: it cannot move to {where} by {move.value}"
    raise GateRefused(message, hint=remedy)


def allowed_moves(source: VersionStatus) -> Sequence[Transition]:
    return [t for t in TRANSITIONS if t.source is source]


def evaluate(transition: Transition, facts: GateFacts) -> list[GateCheck]:
    return [gate(facts) for gate in transition.gates]


def overall(checks: Sequence[GateCheck]) -> GateState:
    if any(c.state is GateState.FAILED for c in checks):
        return GateState.FAILED
    if any(c.state is GateState.WAITING for c in checks):
        return GateState.WAITING
    return GateState.PASSED
