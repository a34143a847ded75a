"""Every row of the lifecycle table, allowed and refused, through the services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from promptship.clock import ManualClock
from promptship.config import Policy
from promptship.domain.promptfile import parse_prompt
from promptship.errors import BadInput, Conflict, Forbidden, GateRefused, NotFound, RequestClosed
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.store.models import AuditEvent, DeploymentHistory, OutboxMessage
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import (
    AUTHOR,
    REQUESTER,
    case_results,
    pass_tests,
    push,
    slack,
    to_production,
    to_staging,
)

NAME = "customer-support"


async def count(db: Database, model: type, *where: object) -> int:
    async with db.reader() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(model).where(*where))
            ).scalar_one()
        )


async def status_of(core: Promptship, version: str) -> str:
    return (await core.show(NAME, version)).status


# -- registering versions ------------------------------------------------------------------


async def test_push_registers_a_draft_and_is_idempotent(core: Promptship) -> None:
    spec = parse_prompt(prompt_yaml(NAME, "1.0.0"))
    first = await core.push(spec, slack(AUTHOR))
    again = await core.push(spec, slack(AUTHOR))
    assert first.created and not again.created
    assert first.content_hash == again.content_hash
    assert await status_of(core, "1.0.0") == "draft"
    assert await count(core.db, AuditEvent, AuditEvent.action == "version.registered") == 1


async def test_push_of_changed_content_under_a_released_version_is_refused(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    with pytest.raises(Conflict, match="already registered with other content") as err:
        await push(core, version="1.0.0", system_prompt="Something else entirely.")
    assert "bump the version" in str(err.value)
    assert (await core.show(NAME, "1.0.0")).system_prompt == "You are a helpful support agent."


async def test_unknown_prompt_and_version_name_what_exists(core: Promptship) -> None:
    await push(core, version="1.0.0")
    with pytest.raises(NotFound, match="did you mean customer-support"):
        await core.show("customer-suport")
    with pytest.raises(NotFound, match="has no version 9.9.9.*1.0.0"):
        await core.show(NAME, "9.9.9")


# -- draft -> testing -> staging -----------------------------------------------------------


async def test_draft_cannot_enter_staging_without_a_test_run(core: Promptship) -> None:
    await push(core)
    with pytest.raises(GateRefused) as err:
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    assert str(err.value).startswith(
        "customer-support 1.0.0 is draft: run its tests before staging"
    )
    assert await status_of(core, "1.0.0") == "draft"


async def test_a_run_moves_draft_to_testing_and_back_when_nothing_waits(core: Promptship) -> None:
    await push(core)
    run = await core.start_validation_run(NAME, "1.0.0", slack(REQUESTER), total=2)
    assert await status_of(core, "1.0.0") == "testing"
    finished = await core.finish_validation_run(run.id, case_results(2))
    assert finished.state == "passed" and finished.pass_rate == 1.0
    assert await status_of(core, "1.0.0") == "draft"


async def test_open_staging_request_waits_for_the_run_and_promotes_when_it_passes(
    core: Promptship,
) -> None:
    await push(core)
    run = await core.start_validation_run(NAME, "1.0.0", slack(REQUESTER), total=10)
    request = await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    assert request.state == "open"
    assert [c.state for c in request.checks if c.gate == "tests"] == ["waiting"]
    await core.finish_validation_run(run.id, case_results(9, 1))
    assert await status_of(core, "1.0.0") == "staging"
    assert (await core.request(request.id)).state == "promoted"


async def test_passing_run_then_promote_enters_staging(core: Promptship) -> None:
    await push(core)
    await pass_tests(core, NAME, "1.0.0", passed=8, failed=2)  # exactly 0.80
    request = await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    assert request.state == "promoted"
    status = (await core.status(NAME))[0]
    assert [(d.environment, d.version) for d in status.environments] == [("staging", "1.0.0")]


async def test_low_pass_rate_is_refused_with_the_numbers(core: Promptship) -> None:
    await push(core)
    await pass_tests(core, NAME, "1.0.0", passed=7, failed=3)
    with pytest.raises(
        GateRefused, match=r"pass rate 70% is below the required 80% \(7 passed, 3 failed"
    ):
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    assert await status_of(core, "1.0.0") == "draft"


async def test_errored_cases_count_against_the_pass_rate(core: Promptship) -> None:
    await push(core)
    await core.record_validation_run(NAME, "1.0.0", case_results(7, 0, errored=3), slack(REQUESTER))
    with pytest.raises(GateRefused, match="3 errored"):
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))


async def test_regressions_block_unless_overridden_with_a_reason(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await push(core, version="1.1.0", system_prompt="v1.1")
    await core.record_validation_run(
        NAME, "1.0.0", case_results(10), slack(REQUESTER), regressions=["refund policy"]
    )
    with pytest.raises(
        GateRefused, match="1 case\\(s\\) pass on production and fail here \\(refund policy\\)"
    ):
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    await core.record_validation_run(
        NAME,
        "1.1.0",
        case_results(10),
        slack("U01"),  # an approver: accepting regressions is a decision
        regressions=["refund policy"],
        regression_override="known flake",
    )
    assert (
        await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    ).state == "promoted"


# -- staging -> production -----------------------------------------------------------------


async def test_production_needs_two_distinct_approvers(core: Promptship) -> None:
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    assert request.state == "open" and request.required_approvals == 2
    first = await core.approve(request.id, slack("U01"), "looks good")
    assert first.recorded and first.request.state == "open"
    assert "1/2 approvals" in first.message
    second = await core.approve(request.id, slack("U05"))  # approver through the S0GROUP user group
    assert second.request.state == "promoted"
    assert await status_of(core, "1.0.0") == "production"


async def test_a_new_production_version_deprecates_the_old_one(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_production(core, version="1.1.0")
    assert await status_of(core, "1.0.0") == "deprecated"
    assert await status_of(core, "1.1.0") == "production"


async def test_no_skipping_draft_to_production(core: Promptship) -> None:
    await push(core)
    await pass_tests(core, NAME, "1.0.0")
    with pytest.raises(GateRefused, match="is draft: it cannot move to production") as err:
        await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    assert "break-glass" in str(err.value)


async def test_promoting_to_dev_or_an_unknown_environment_is_bad_input(core: Promptship) -> None:
    await push(core)
    with pytest.raises(BadInput, match="unknown environment 'prod'.*staging, production"):
        await core.request_promotion(NAME, "1.0.0", "prod", slack(REQUESTER))
    with pytest.raises(BadInput, match="dev takes no requests"):
        await core.request_promotion(NAME, "1.0.0", "dev", slack(REQUESTER))


async def test_same_promotion_requested_twice_reuses_the_open_request(core: Promptship) -> None:
    await push(core)
    await to_staging(core)
    a = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    b = await core.request_promotion(NAME, "1.0.0", "production", slack("U07"))
    assert a.id == b.id


# -- who may decide ------------------------------------------------------------------------


@pytest.fixture
async def production_request(core: Promptship) -> int:
    await push(core)
    await to_staging(core)
    return (await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))).id


async def test_requester_cannot_approve_their_own_request(db: Database, clock: ManualClock) -> None:
    core = Promptship(db, make_policy(f"roles: {{approvers: [U01, {REQUESTER}]}}"), clock)
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    with pytest.raises(Forbidden, match="you requested req-.*someone else must approve"):
        await core.approve(request.id, slack(REQUESTER))


async def test_author_cannot_approve_their_own_version(db: Database, clock: ManualClock) -> None:
    core = Promptship(db, make_policy(f"roles: {{approvers: [U01, {AUTHOR}]}}"), clock)
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    with pytest.raises(Forbidden, match="you wrote customer-support 1.0.0"):
        await core.approve(request.id, slack(AUTHOR))


async def test_non_approver_is_refused_and_nothing_changes(
    core: Promptship, production_request: int
) -> None:
    with pytest.raises(Forbidden, match="only approvers can approve"):
        await core.approve(production_request, slack("U08"))
    assert (await core.request(production_request)).decisions == []


async def test_duplicate_approval_counts_once(core: Promptship, production_request: int) -> None:
    await core.approve(production_request, slack("U01"))
    again = await core.approve(production_request, slack("U01"))
    assert not again.recorded and "already approved" in again.message
    assert again.request.state == "open"
    assert len(again.request.decisions) == 1


async def test_rejection_closes_the_request_and_further_clicks_are_refused(
    core: Promptship, production_request: int
) -> None:
    with pytest.raises(BadInput, match="needs a reason"):
        await core.reject(production_request, slack("U01"), "  ")
    outcome = await core.reject(production_request, slack("U01"), "fails refunds on mobile")
    assert outcome.request.state == "rejected"
    with pytest.raises(RequestClosed, match="is rejected by U01: fails refunds on mobile"):
        await core.approve(production_request, slack("U02"))


async def test_expired_request_fails_closed(
    core: Promptship, clock: ManualClock, production_request: int
) -> None:
    clock.advance(timedelta(hours=72, seconds=1))
    with pytest.raises(RequestClosed, match="expired"):
        await core.approve(production_request, slack("U01"))
    request = await core.request(production_request)
    assert request.state == "expired" and request.decisions == []
    assert await count(core.db, AuditEvent, AuditEvent.action == "request.expired") == 1


async def test_sweeper_expires_stale_requests_once(
    core: Promptship, clock: ManualClock, production_request: int
) -> None:
    assert await core.expire_stale_requests() == []
    clock.advance(timedelta(hours=73))
    expired = await core.expire_stale_requests()
    assert [r.id for r in expired] == [production_request]
    assert await core.expire_stale_requests() == []


async def test_asking_again_after_expiry_opens_a_new_request_that_takes_approvals(
    core: Promptship, clock: ManualClock, production_request: int
) -> None:
    clock.advance(timedelta(hours=73))
    again = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    assert again.id != production_request and again.state == "open"
    assert (await core.request(production_request)).state == "expired"
    assert await count(core.db, AuditEvent, AuditEvent.action == "request.expired") == 1
    await core.approve(again.id, slack("U01"))
    outcome = await core.approve(again.id, slack("U02"))
    assert outcome.request.state == "promoted"


async def test_cancel_by_requester_or_approver_only(
    core: Promptship, production_request: int
) -> None:
    with pytest.raises(Forbidden, match="only the requester or an approver"):
        await core.cancel(production_request, slack("U08"))
    cancelled = await core.cancel(production_request, slack(REQUESTER))
    assert cancelled.state == "cancelled"
    with pytest.raises(RequestClosed, match="cancelled"):
        await core.approve(production_request, slack("U01"))


async def test_approval_never_carries_over_to_another_version(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await push(core, version="1.0.1", system_prompt="patched")
    await to_staging(core, version="1.0.0")
    old = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    await core.approve(old.id, slack("U01"))
    await to_staging(core, version="1.0.1")  # replaces 1.0.0 in staging
    assert (await core.request(old.id)).state == "superseded"
    new = await core.request_promotion(NAME, "1.0.1", "production", slack(REQUESTER))
    assert new.decisions == [] and new.content_hash != old.content_hash


# -- soak and stakeholders -----------------------------------------------------------------


async def test_soak_gate_holds_production_until_the_soak_passes(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(
        db, make_policy("environments: {production: {approvals: 2, soak: 1h}}"), clock
    )
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    await core.approve(request.id, slack("U01"))
    outcome = await core.approve(request.id, slack("U02"))
    assert outcome.request.state == "open"
    assert {c.gate: c.state for c in outcome.request.checks}["soak"] == "waiting"
    soak_id = await core.staging_soak_id(NAME, "1.0.0")
    assert soak_id is not None
    await core.finish_soak(soak_id, passed=True)
    assert (await core.request(request.id)).state == "promoted"


async def test_failed_soak_blocks_production(db: Database, clock: ManualClock) -> None:
    core = Promptship(
        db, make_policy("environments: {production: {approvals: 0, soak: 1h}}"), clock
    )
    await push(core)
    await to_staging(core)
    soak_id = await core.staging_soak_id(NAME, "1.0.0")
    assert soak_id is not None
    await core.finish_soak(soak_id, passed=False, failure="cycle 3 diverged 14% > 10%")
    with pytest.raises(GateRefused, match="staging soak failed: cycle 3 diverged"):
        await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))


async def test_stakeholder_sign_off_when_configured(db: Database, clock: ManualClock) -> None:
    core = Promptship(db, make_policy("roles: {stakeholders: [U07]}"), clock)
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    await core.approve(request.id, slack("U01"))
    outcome = await core.approve(request.id, slack("U02"))
    assert outcome.request.state == "open"
    assert {c.gate: c.state for c in outcome.request.checks}["stakeholder sign-off"] == "waiting"
    assert (await core.approve(request.id, slack("U07"))).request.state == "promoted"


# -- break-glass ---------------------------------------------------------------------------


async def test_breakglass_needs_a_reason_and_three_approvals(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.0.1", system_prompt="hotfix")
    await pass_tests(core, NAME, "1.0.1")
    with pytest.raises(BadInput, match="break-glass needs a written reason"):
        await core.breakglass(NAME, "1.0.1", slack(REQUESTER), " ")
    request = await core.breakglass(
        NAME, "1.0.1", slack(REQUESTER), "refund answers leak card numbers"
    )
    assert request.kind == "breakglass" and request.required_approvals == 3
    await core.approve(request.id, slack("U01"))
    assert (await core.approve(request.id, slack("U02"))).request.state == "open"
    assert (await core.approve(request.id, slack("U06"))).request.state == "promoted"
    assert await status_of(core, "1.0.1") == "production"
    assert await status_of(core, "1.0.0") == "deprecated"


async def test_breakglass_still_needs_passing_tests(core: Promptship) -> None:
    await push(core)
    with pytest.raises(GateRefused, match="run its tests before production"):
        await core.breakglass(NAME, "1.0.0", slack(REQUESTER), "outage")


# -- one transaction per change ------------------------------------------------------------


async def test_a_refused_move_leaves_no_trace(core: Promptship) -> None:
    await push(core)
    before = (
        await count(core.db, AuditEvent),
        await count(core.db, OutboxMessage),
        await count(core.db, DeploymentHistory),
    )
    with pytest.raises(GateRefused):
        await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    after = (
        await count(core.db, AuditEvent),
        await count(core.db, OutboxMessage),
        await count(core.db, DeploymentHistory),
    )
    assert before == after


async def test_every_change_writes_audit_and_outbox(core: Promptship) -> None:
    await push(core)
    await to_production(core)
    async with core.db.reader() as session:
        actions = (
            (await session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)))
            .scalars()
            .all()
        )
        topics = (
            (await session.execute(select(OutboxMessage.topic).order_by(OutboxMessage.id)))
            .scalars()
            .all()
        )
    assert actions.count("deployment.changed") == 2
    assert actions.count("request.promoted") == 2
    assert "request.promoted" in topics and "request.updated" in topics
    assert (await core.verify_audit()).ok


async def test_unknown_request(core: Promptship) -> None:
    with pytest.raises(NotFound, match="no promotion request req-404"):
        await core.approve(404, slack("U01"))


def test_policy_fixture_is_the_documented_shape(policy: Policy) -> None:
    assert policy.environments.production_policy.approvals == 2
    assert policy.breakglass.approvals == 3


async def test_a_failed_run_closes_the_request_waiting_on_it(core: Promptship) -> None:
    await push(core)
    run = await core.start_validation_run(NAME, "1.0.0", slack(REQUESTER), total=10)
    request = await core.request_promotion(NAME, "1.0.0", "staging", slack(REQUESTER))
    await core.finish_validation_run(run.id, case_results(5, 5))
    closed = await core.request(request.id)
    assert closed.state == "failed"
    assert (
        closed.close_reason is not None
        and "pass rate 50% is below the required 80%" in closed.close_reason
    )
    assert await status_of(core, "1.0.0") == "draft"


async def test_a_failed_soak_closes_the_open_production_request(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(
        db, make_policy("environments: {production: {approvals: 1, soak: 1h}}"), clock
    )
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    soak_id = await core.staging_soak_id(NAME, "1.0.0")
    assert soak_id is not None
    await core.finish_soak(soak_id, passed=False, failure="cycle 2 diverged 31% > 10%")
    closed = await core.request(request.id)
    assert closed.state == "failed" and "cycle 2 diverged" in (closed.close_reason or "")
    with pytest.raises(RequestClosed):
        await core.approve(request.id, slack("U01"))


async def test_status_follows_the_furthest_environment_a_version_is_live_in(
    core: Promptship,
) -> None:
    """Found by the state-machine property test: staging and production roll back apart."""
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_production(core, version="1.1.0")  # 1.1.0 live in both; 1.0.0 deprecated

    staging = await core.rollback(NAME, "staging", slack("U03"))
    assert (staging.from_version, staging.to_version) == ("1.1.0", "1.0.0")
    assert (await core.show(NAME, "1.0.0")).status == "staging"
    assert (await core.show(NAME, "1.1.0")).status == "production"  # still live there

    production = await core.rollback(NAME, "production", slack("U03"))
    assert (production.from_version, production.to_version) == ("1.1.0", "1.0.0")
    assert (await core.show(NAME, "1.0.0")).status == "production"
    assert (await core.show(NAME, "1.1.0")).status == "reverted"

    with pytest.raises(GateRefused, match="1.0.0 is production"):
        await core.archive(NAME, "1.0.0", slack("U01"))
    await push(core, version="1.2.0", system_prompt="v1.2")
    await to_staging(core, version="1.2.0")
    with pytest.raises(GateRefused, match="1.1.0 was rolled back"):  # in production
        await core.rollback(NAME, "staging", slack("U03"), to_version="1.1.0")
    await core.rollback(NAME, "staging", slack("U03"), to_version="1.0.0")
    assert (await core.show(NAME, "1.2.0")).status == "reverted"
    assert (await core.show(NAME, "1.0.0")).status == "production"  # live in both
