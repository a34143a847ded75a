"""Property tests of the promotion state machine.

The pure part: every (status, target, move) missing from ``TRANSITIONS`` is refused with a
message that names the state. The stateful part: hypothesis drives the real services on a
real SQLite store with random sequences of pushes, test runs, requests, approvals by
anyone (requesters, authors, strangers, the same person twice), rejections, cancels,
break-glass, rollbacks, expiry and archiving; after every step the store must be in a legal
state and every change must have its audit event; after every run the hash chain must be
intact. ``HYPOTHESIS_PROFILE=thorough`` runs ten times as many random sequences.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from promptship.clock import ManualClock
from promptship.domain.lifecycle import (
    TRANSITIONS,
    Move,
    RequestState,
    VersionStatus,
    require_transition,
)
from promptship.domain.promptfile import parse_prompt
from promptship.errors import GateRefused, PromptshipError
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.store.models import (
    Approval,
    AuditEvent,
    Deployment,
    DeploymentHistory,
    PromotionRequest,
    PromptVersion,
)
from tests.conftest import THOROUGH, make_policy, prompt_yaml
from tests.helpers import case_results, slack

T = TypeVar("T")
PROMPT = "customer-support"
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]
APPROVERS = {"U01", "U02", "U06", "U05"}  # U05 through the S0GROUP user group
# approvers, then on-call, a requester, the author and a stranger; approvers drawn more often
PEOPLE = ["U01", "U02", "U06", "U05", "U01", "U02", "U03", "U04", "U09", "U77"]
AUTHOR = "U09"


# -- the table ---------------------------------------------------------------------------------


@given(
    source=st.sampled_from(list(VersionStatus)),
    target=st.sampled_from(list(VersionStatus)),
    move=st.sampled_from(list(Move)),
)
def test_every_move_missing_from_the_table_is_refused_naming_the_state(
    source: VersionStatus, target: VersionStatus, move: Move
) -> None:
    listed = any((t.source, t.target, t.move) == (source, target, move) for t in TRANSITIONS)
    if listed:
        assert require_transition("customer-support 2.2.0", source, target, move).target is target
        return
    with pytest.raises(GateRefused) as refused:
        require_transition("customer-support 2.2.0", source, target, move)
    assert f"customer-support 2.2.0 is {source.value}" in str(refused.value)


def test_terminal_and_entry_states() -> None:
    """Nothing leaves ``archived``; nothing but a push creates ``draft``."""
    assert not [t for t in TRANSITIONS if t.source is VersionStatus.ARCHIVED]
    into_draft = [t for t in TRANSITIONS if t.target is VersionStatus.DRAFT]
    assert [(t.source, t.move) for t in into_draft] == [(VersionStatus.TESTING, Move.FINISH_TESTS)]


# -- the services, driven at random -------------------------------------------------------------

CLOSE_ACTIONS = {f"request.{s.value}" for s in RequestState if s is not RequestState.OPEN}


class PromotionMachine(RuleBasedStateMachine):
    template: Path
    workdir: Path
    count = 0
    seen: Counter[str] = Counter()  # what the random runs reached, to show they explore

    def __init__(self) -> None:
        super().__init__()
        PromotionMachine.count += 1
        path = self.workdir / f"machine-{PromotionMachine.count}.db"
        shutil.copy(self.template, path)
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.db = Database(f"sqlite+aiosqlite:///{path}")
        self.core = Promptship(self.db, make_policy(), self.clock)
        self.contents: dict[str, int] = {}  # version -> which content variant was pushed
        self.audit_seen = 0
        self.open_requests: list[int] = []

    def run(self, coro: Coroutine[Any, Any, T]) -> T | PromptshipError:
        """Run one operation; a refusal must be a PromptshipError and must leave no trace."""
        before = self.run_raw(self.audit_count())
        try:
            return self.run_raw(coro)
        except PromptshipError as refused:
            assert str(refused).strip(), "a refusal must say why"
            assert self.run_raw(self.audit_count()) == before, f"refused but audited: {refused}"
            return refused

    def run_raw(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:  # the hash chain only grows: verified once per run, over every event it made
            verification = self.run_raw(self.core.verify_audit())
            assert verification.ok, verification.problems
        finally:
            self.run_raw(self.db.dispose())
            self.loop.close()

    async def audit_count(self) -> int:
        async with self.db.reader() as session:
            return int(await session.scalar(select(func.count()).select_from(AuditEvent)))

    # -- rules ---------------------------------------------------------------------------------

    @initialize(history=st.booleans())
    def first_version(self, history: bool) -> None:
        """Start fresh, or with a history: 1.0.0 then 1.1.0 through production."""
        self.push_version("1.0.0", 0)
        if history:
            self.walk_towards_production("1.0.0", 2)
            self.push_version("1.1.0", 0)
            self.walk_towards_production("1.1.0", 2)

    @rule(version=st.sampled_from(VERSIONS), variant=st.integers(0, 1))
    def push_version(self, version: str, variant: int) -> None:
        spec = parse_prompt(
            prompt_yaml(PROMPT, version, system_prompt=f"Agent {version}/{variant}.")
        )
        result = self.run(self.core.push(spec, slack(AUTHOR)))
        known = self.contents.get(version)
        if known is None:
            assert not isinstance(result, PromptshipError), result
            self.contents[version] = variant
        elif known == variant:
            assert not isinstance(result, PromptshipError) and not result.created
        else:
            assert isinstance(result, PromptshipError), "changed content must be refused"

    @rule(version=st.sampled_from(VERSIONS), passed=st.sampled_from([10, 10, 9, 8, 3]))
    def test_run(self, version: str, passed: int) -> None:
        self.run(
            self.core.record_validation_run(
                PROMPT, version, case_results(passed, 10 - passed), slack("U04")
            )
        )

    @rule(
        version=st.sampled_from(VERSIONS),
        environment=st.sampled_from(["staging", "production"]),
        requester=st.sampled_from(PEOPLE),
    )
    def request_promotion(self, version: str, environment: str, requester: str) -> None:
        self.run(self.core.request_promotion(PROMPT, version, environment, slack(requester)))

    @rule(version=st.sampled_from(VERSIONS), approvals=st.integers(0, 2))
    def walk_towards_production(self, version: str, approvals: int) -> None:
        """The usual path in one step, so random runs get deep: green tests, staging, a
        production request and some approvals (each step may still be refused)."""
        self.run(self.core.record_validation_run(PROMPT, version, case_results(10), slack("U04")))
        self.run(self.core.request_promotion(PROMPT, version, "staging", slack("U04")))
        request = self.run(self.core.request_promotion(PROMPT, version, "production", slack("U04")))
        if not isinstance(request, PromptshipError):
            for approver in ["U01", "U02"][:approvals]:
                self.run(self.core.approve(request.id, slack(approver)))

    @rule(
        version=st.sampled_from(VERSIONS),
        requester=st.sampled_from(PEOPLE),
        reason=st.sampled_from(["", "checkout is down"]),
    )
    def breakglass(self, version: str, requester: str, reason: str) -> None:
        result = self.run(self.core.breakglass(PROMPT, version, slack(requester), reason))
        if not reason:
            assert isinstance(result, PromptshipError), "break-glass without a reason"

    @precondition(lambda self: self.open_requests)
    @rule(pick=st.integers(0, 7), user=st.sampled_from(PEOPLE))
    def approve(self, pick: int, user: str) -> None:
        request = self.open_requests[pick % len(self.open_requests)]
        before = self.run_raw(self.core.request(request))
        result = self.run(self.core.approve(request, slack(user)))
        if user not in APPROVERS or user in (before.requester, before.author):
            assert isinstance(result, PromptshipError), f"{user} may not approve {before}"
        if not isinstance(result, PromptshipError) and user in before.approvers:
            assert not result.recorded

    @precondition(lambda self: self.open_requests)
    @rule(pick=st.integers(0, 7), user=st.sampled_from(PEOPLE))
    def reject(self, pick: int, user: str) -> None:
        request = self.open_requests[pick % len(self.open_requests)]
        self.run(self.core.reject(request, slack(user), "not yet"))

    @precondition(lambda self: self.open_requests)
    @rule(pick=st.integers(0, 7), user=st.sampled_from(PEOPLE))
    def cancel(self, pick: int, user: str) -> None:
        request = self.open_requests[pick % len(self.open_requests)]
        self.run(self.core.cancel(request, slack(user)))

    @rule(
        environment=st.sampled_from(["production", "production", "staging"]),
        actor=st.sampled_from(PEOPLE),
        to=st.sampled_from([None, None, None, *VERSIONS]),
    )
    def rollback(self, environment: str, actor: str, to: str | None) -> None:
        result = self.run(self.core.rollback(PROMPT, environment, slack(actor), to))
        if not isinstance(result, PromptshipError):
            self.seen[f"{environment} rolled back"] += 1
        if actor not in APPROVERS | {"U03"}:
            assert isinstance(result, PromptshipError)

    @rule(hours=st.sampled_from([1, 1, 1, 80]))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))
        self.run(self.core.expire_stale_requests())

    @rule(version=st.sampled_from(VERSIONS), actor=st.sampled_from(PEOPLE))
    def archive(self, version: str, actor: str) -> None:
        self.run(self.core.archive(PROMPT, version, slack(actor)))

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def store_is_legal(self) -> None:
        self.run_raw(self._check_store())

    async def _check_store(self) -> None:
        async with self.db.reader() as session:
            versions = {v.id: v for v in (await session.scalars(select(PromptVersion))).all()}
            active = {d.environment: d for d in (await session.scalars(select(Deployment))).all()}
            for env in ("staging", "production"):
                holders = [v for v in versions.values() if v.status == env]
                assert len(holders) <= 1, f"two versions are {env}: {holders}"
                if holders:
                    self.seen[f"{env} reached"] += 1
                    assert env in active and active[env].version_id == holders[0].id
            if "production" in active:
                assert versions[active["production"].version_id].status == "production"
            for deployment in active.values():
                assert versions[deployment.version_id].status != "archived"

            requests = (await session.scalars(select(PromotionRequest))).all()
            by_version: dict[tuple[int, str, str], int] = {}
            for request in requests:
                decisions = (
                    await session.scalars(select(Approval).where(Approval.request_id == request.id))
                ).all()
                approvers = [d.user_id for d in decisions if d.approve]
                assert len(approvers) == len(set(approvers))
                for d in decisions:
                    assert d.user_id in APPROVERS
                    assert d.user_id not in (request.requester, versions[request.version_id].author)
                if request.state == "promoted":
                    assert len(approvers) >= request.required_approvals
                    assert request.closed_at is not None
                if request.state == "open":
                    key = (request.version_id, request.environment, request.kind)
                    by_version[key] = by_version.get(key, 0) + 1
                    assert not any(not d.approve for d in decisions), "a rejection closes"
                if request.kind == "breakglass":
                    assert request.required_approvals == 3 and request.reason
            assert all(n == 1 for n in by_version.values()), "one open request per move"
            self.open_requests = [r.id for r in requests if r.state == "open"]

            events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(events) >= self.audit_seen, "an audit event disappeared"
            self.audit_seen = len(events)
            actions = [e.action for e in events]
            moves = await session.scalar(select(func.count()).select_from(DeploymentHistory))
            assert actions.count("deployment.changed") == moves
            closed = sum(r.state != "open" for r in requests)
            assert sum(a in CLOSE_ACTIONS for a in actions) == closed
            decided = await session.scalar(select(func.count()).select_from(Approval))
            assert actions.count("request.approved") + actions.count("request.rejection") == decided
            assert actions.count("request.created") == len(requests)


@pytest.mark.slow
def test_random_operation_sequences_keep_the_store_legal(
    sqlite_template: Path, tmp_path: Path
) -> None:
    PromotionMachine.template = sqlite_template
    PromotionMachine.workdir = tmp_path
    run_state_machine_as_test(
        PromotionMachine,
        settings=settings(
            # the thorough profile explores new sequences on every run; the default one
            # replays the same 80 (enough to reach every state below, a rollback to an older one too) to keep the suite quick
            max_examples=400 if THOROUGH else 80,
            derandomize=not THOROUGH,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    for reached in ("staging reached", "production reached", "production rolled back"):
        assert PromotionMachine.seen[reached], f"the random runs never got there: {reached}"
