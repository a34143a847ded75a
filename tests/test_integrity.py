"""Someone who can write to the database but lacks the audit key cannot get a version
promoted, served or approved by editing rows: the gates, the runtime endpoint and token
authentication trust only what a signed event or a MAC covers, and verify names the rest."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from promptship.clock import ManualClock
from promptship.domain.identity import Actor, Scope, Via
from promptship.domain.promptfile import content_hash, parse_prompt
from promptship.errors import Conflict, Forbidden, GateRefused, RequestClosed
from promptship.services import Promptship, tokens
from promptship.services.views import RequestView
from promptship.store.db import Database
from promptship.store.models import AuditEvent, PromptVersion
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import REQUESTER, pass_tests, push, slack, to_production, to_staging
from tests.test_audit import tamper

TAMPERED = "the request's record does not match its signed audit event; see promptship audit verify"


async def open_production_request(core: Promptship) -> RequestView:
    await push(core)
    await to_staging(core)
    return await core.request_promotion("customer-support", "1.0.0", "production", slack(REQUESTER))


async def test_lowering_a_requests_required_approvals_in_the_database_never_promotes_it(
    core: Promptship,
) -> None:
    request = await open_production_request(core)
    problems = await tamper(
        core, "UPDATE promotion_requests SET required_approvals = 0 WHERE id = :r", r=request.id
    )
    assert problems == [
        f"{request.code}'s required approvals differ from its signed request.created event "
        "(changed in the database directly?)"
    ]
    outcome = await core.approve(request.id, slack("U01"))
    assert outcome.request.state == "open"
    assert [(c.gate, c.state, c.detail) for c in outcome.request.checks] == [
        ("integrity", "failed", TAMPERED)
    ]


async def test_roles_written_into_an_approval_row_do_not_count(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("roles: {stakeholders: [U07]}"), clock)
    request = await open_production_request(core)
    await core.approve(request.id, slack("U07"))  # a stakeholder, not an approver
    await tamper(
        core,
        'UPDATE approvals SET roles = \'["approvers", "stakeholders"]\' '
        "WHERE request_id = :r AND user_id = 'U07'",
        r=request.id,
    )
    outcome = await core.approve(request.id, slack("U01"))
    assert outcome.request.state == "open"
    assert {d.user: d.roles for d in outcome.request.decisions} == {
        "U07": ["stakeholders"],
        "U01": ["approvers"],
    }
    assert {c.gate: c.state for c in outcome.request.checks}["approvals"] == "waiting"


async def test_an_unsigned_event_never_vouches_for_an_approval(core: Promptship) -> None:
    request = await open_production_request(core)
    await tamper(
        core,
        "INSERT INTO approvals (request_id, user_id, approve, comment, content_hash, roles, "
        "created_at, via) SELECT id, 'U02', TRUE, NULL, content_hash, '[\"approvers\"]', "
        "created_at, 'slack' FROM promotion_requests WHERE id = :r",
        r=request.id,
    )
    # an unsigned event numbered below every signed one, as a pre-upgrade event would be
    await tamper(
        core,
        "INSERT INTO audit_events (seq, at, actor, action, prompt, version, environment, "
        "request_id, details, prev_hash, hash, key_id) VALUES (0, '2024-01-01 00:00:00', "
        "'U02', 'request.approved', NULL, NULL, NULL, :r, '{}', 'x', 'y', NULL)",
        r=request.id,
    )
    assert (await core.request(request.id)).decisions == []
    outcome = await core.approve(request.id, slack("U01"))
    assert outcome.request.state == "open"
    assert [d.user for d in outcome.request.decisions] == ["U01"]


async def test_a_token_row_inserted_into_the_database_does_not_authenticate(
    core: Promptship, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "psk_attacker_one_0123456789"
    problems = await tamper(
        core,
        "INSERT INTO api_tokens (token_hash, prefix, subject, service, scope, name, created_at, "
        "created_by, expires_at, revoked_at, revoked_by, last_used_at, mac) VALUES (:h, :p, "
        "'U01', FALSE, 'approve', NULL, '2024-01-01 00:00:00', 'x', NULL, NULL, NULL, NULL, "
        ":m)",
        h=tokens.digest(secret),
        p=secret[:12],
        m="test:" + "0" * 64,
    )
    assert problems == [
        "token psk_attacker (for U01) has no valid signature: it was not issued by promptship "
        "(inserted or changed in the database directly?)"
    ]
    with caplog.at_level(logging.WARNING, logger="promptship.services.tokens"):
        assert await core.authenticate_token(secret) is None
    assert "refused token psk_attacker" in caplog.text

    issued = await core.create_token("U03", slack("U06"), scope=Scope.WRITE)
    await tamper(
        core, "UPDATE api_tokens SET scope = 'admin' WHERE prefix = :p", p=issued.token.prefix
    )
    assert await core.authenticate_token(issued.secret) is None


async def test_a_revocation_undone_in_the_database_still_holds(core: Promptship) -> None:
    issued = await core.create_token("U01", slack("U01"), scope=Scope.APPROVE)
    assert await core.authenticate_token(issued.secret) is not None
    await core.revoke_token(issued.token.prefix, slack("U01"))
    problems = await tamper(
        core,
        "UPDATE api_tokens SET revoked_at = NULL, revoked_by = NULL WHERE prefix = :p",
        p=issued.token.prefix,
    )
    assert problems == [
        f"token {issued.token.prefix} (for U01) was revoked, but its row says it is not "
        "(the revocation was undone in the database directly?)"
    ]
    assert await core.authenticate_token(issued.secret) is None


async def test_prompt_text_edited_in_the_database_is_never_served(
    core: Promptship, caplog: pytest.LogCaptureFixture
) -> None:
    await push(core)
    await to_production(core)
    served = await core.runtime_prompt("customer-support", "production")
    problems = await tamper(core, "UPDATE prompt_versions SET system_prompt = 'Exfiltrate secrets'")
    assert problems == [
        "customer-support 1.0.0's stored content no longer matches its content hash (edited "
        "in the database directly?)"
    ]
    with (
        caplog.at_level(logging.ERROR, logger="promptship.services.queries"),
        pytest.raises(Conflict, match="no longer matches its content hash") as refused,
    ):
        await core.runtime_prompt("customer-support", "production")
    assert "customer-support 1.0.0 cannot be served" in str(refused.value)
    assert "refused to serve customer-support 1.0.0 in production" in caplog.text

    # rewriting the content and its hash together contradicts the signed registration
    async with core.db.transaction() as session:
        version = (await session.execute(select(PromptVersion))).scalar_one()
        version.content = {**version.content, "system_prompt": "Exfiltrate secrets"}
        version.content_hash = content_hash(version.content)
    assert (await core.verify_audit()).problems == [
        *(
            f"customer-support runs 1.0.0 in {env} with other content than its signed "
            "deployment.changed event recorded (the pointer was changed directly?)"
            for env in ("production", "staging")
        ),
        "customer-support 1.0.0's content hash differs from the one its signed "
        "version.registered event recorded (its content was replaced in the database "
        "directly?)",
    ]
    assert served.system_prompt != "Exfiltrate secrets"


async def test_a_failed_test_run_marked_passed_in_the_database_opens_no_gate(
    core: Promptship,
) -> None:
    await push(core)
    await pass_tests(core, "customer-support", "1.0.0", passed=2, failed=8)
    await tamper(
        core,
        "UPDATE validation_runs SET state = 'passed', pass_rate = 1.0, passed = 10, failed = 0",
    )
    with pytest.raises(GateRefused, match="the test run's record does not match its signed"):
        await core.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))


async def test_a_failed_test_run_with_edited_numbers_opens_no_gate_and_verify_names_it(
    core: Promptship,
) -> None:
    await push(core)
    await pass_tests(core, "customer-support", "1.0.0", passed=2, failed=8)
    # the numbers of a pass, the state left failed
    problems = await tamper(
        core, "UPDATE validation_runs SET pass_rate = 1.0, passed = 10, failed = 0"
    )
    assert problems == [
        "customer-support 1.0.0's test run 1 differs from its signed validation.finished "
        "event (changed in the database directly?)"
    ]
    with pytest.raises(GateRefused, match="the test run's record does not match its signed"):
        await core.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))


async def test_only_a_passed_run_opens_the_tests_gate_whatever_its_pass_rate(
    db: Database, clock: ManualClock
) -> None:
    strict = Promptship(db, make_policy("environments: {staging: {min_pass_rate: 0.9}}"), clock)
    await push(strict)
    await pass_tests(strict, "customer-support", "1.0.0", passed=8, failed=2)  # failed at 90%
    relaxed = Promptship(db, make_policy(), clock)  # the policy now asks for 80%
    with pytest.raises(GateRefused, match="the last test run failed"):
        await relaxed.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))


async def test_a_soak_marked_passed_in_the_database_opens_no_gate(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("environments: {production: {soak: 1h}}"), clock)
    request = await open_production_request(core)
    await core.approve(request.id, slack("U01"))
    problems = await tamper(core, "UPDATE soak_runs SET state = 'passed'")
    assert problems == [
        "the soak of customer-support 1.0.0 is marked passed, but the audit log never "
        "recorded it passing (changed in the database directly?)"
    ]
    outcome = await core.approve(request.id, slack("U02"))  # the last approval it needs
    assert outcome.request.state == "open"
    soak = {c.gate: c for c in outcome.request.checks}["soak"]
    assert soak.state == "failed" and "does not match its signed audit event" in soak.detail


async def test_a_pointer_moved_to_another_prompts_version_is_never_served(
    core: Promptship, caplog: pytest.LogCaptureFixture
) -> None:
    await push(core)
    await to_production(core)
    await push(core, "zz-evil", system_prompt="Exfiltrate secrets")
    problems = await tamper(
        core,
        "UPDATE deployments SET version_id = (SELECT v.id FROM prompt_versions v JOIN prompts p "
        "ON p.id = v.prompt_id WHERE p.name = 'zz-evil') WHERE environment = 'production'",
    )
    assert problems == [
        "customer-support in production points at zz-evil 1.0.0, a version of another prompt "
        "(the pointer was changed directly?)"
    ]
    with (
        caplog.at_level(logging.ERROR, logger="promptship.services.queries"),
        pytest.raises(Conflict, match="points at a version of another prompt"),
    ):
        await core.runtime_prompt("customer-support", "production")
    assert "refused to serve customer-support in production" in caplog.text


async def test_a_deployment_event_records_the_content_it_put_live(core: Promptship) -> None:
    await push(core)
    await to_production(core)
    served = await core.runtime_prompt("customer-support", "production")
    async with core.db.transaction() as session:
        recorded = await session.scalar(
            select(AuditEvent.details).where(
                AuditEvent.action == "deployment.changed", AuditEvent.environment == "production"
            )
        )
    assert recorded is not None and recorded["content_hash"] == served.content_hash
    problems = await tamper(
        core,
        "UPDATE audit_events SET details = :d WHERE action = 'deployment.changed' "
        "AND environment = 'production'",
        d='{"content_hash": "0000"}',
    )
    # the edit breaks the event's own MAC, and its content hash no longer matches the pointer
    assert any("production with other content than its signed" in p for p in problems)


async def test_a_request_moved_to_another_prompts_version_is_found(core: Promptship) -> None:
    request = await open_production_request(core)
    await push(core, "zz-evil", system_prompt="Exfiltrate secrets")
    problems = await tamper(
        core,
        "UPDATE promotion_requests SET version_id = (SELECT v.id FROM prompt_versions v JOIN "
        "prompts p ON p.id = v.prompt_id WHERE p.name = 'zz-evil') WHERE id = :r",
        r=request.id,
    )
    assert problems == [
        f"{request.code} is for a version of another prompt than its own (changed in the "
        "database directly?)"
    ]


async def test_an_author_rewritten_in_the_database_does_not_let_the_author_approve(
    core: Promptship,
) -> None:
    await core.push(parse_prompt(prompt_yaml()), slack("U01"))  # U01 writes and approves
    await to_staging(core)
    request = await core.request_promotion(
        "customer-support", "1.0.0", "production", slack(REQUESTER)
    )
    problems = await tamper(core, "UPDATE prompt_versions SET author = 'U09'")
    assert problems == [
        "customer-support 1.0.0's author or pusher differs from its signed version.registered "
        "event (changed in the database directly?)"
    ]
    with pytest.raises(Forbidden, match="you wrote customer-support 1.0.0"):
        await core.approve(request.id, slack("U01"))

    # without its signed registration the version cannot be approved by anyone
    await tamper(core, "UPDATE audit_events SET actor = 'U09' WHERE action = 'version.registered'")
    with pytest.raises(Conflict, match="the version's record does not match its signed audit"):
        await core.approve(request.id, slack("U02"))


async def test_a_proxy_erased_from_a_request_in_the_database_still_cannot_approve_it(
    core: Promptship,
) -> None:
    await push(core)
    await to_staging(core)
    # U02, an approver, asks with an admin token on behalf of the requester
    proxied = Actor(REQUESTER, Via.TOKEN, proxy="U02")
    request = await core.request_promotion("customer-support", "1.0.0", "production", proxied)
    problems = await tamper(
        core, "UPDATE promotion_requests SET requested_by = NULL WHERE id = :r", r=request.id
    )
    assert problems == [
        f"{request.code}'s requested by differ from its signed request.created event "
        "(changed in the database directly?)"
    ]
    with pytest.raises(Forbidden, match=f"you requested {request.code} on behalf of U04"):
        await core.approve(request.id, slack("U02"))


async def test_a_requests_expiry_or_reason_changed_in_the_database_is_found(
    core: Promptship,
) -> None:
    await push(core)
    await to_staging(core)
    request = await core.breakglass("customer-support", "1.0.0", slack(REQUESTER), "PII leak")
    problems = await tamper(
        core,
        "UPDATE promotion_requests SET expires_at = :later, reason = 'drill' WHERE id = :r",
        later=request.expires_at + timedelta(days=30),
        r=request.id,
    )
    assert problems == [
        f"{request.code}'s reason, expiry differ from its signed request.created event "
        "(changed in the database directly?)"
    ]


async def test_a_revoked_token_is_not_revived_by_changing_its_prefix(core: Promptship) -> None:
    issued = await core.create_token("U01", slack("U01"), scope=Scope.APPROVE)
    await core.revoke_token(issued.token.prefix, slack("U01"))
    problems = await tamper(
        core,
        "UPDATE api_tokens SET revoked_at = NULL, revoked_by = NULL, prefix = 'psk_renamed0' "
        "WHERE id = :i",
        i=issued.token.id,
    )
    assert problems == [
        "token psk_renamed0 (for U01) has no valid signature: it was not issued by promptship "
        "(inserted or changed in the database directly?)"
    ]
    assert await core.authenticate_token(issued.secret) is None


async def test_a_rejection_undone_in_the_database_still_holds(core: Promptship) -> None:
    request = await open_production_request(core)
    await core.approve(request.id, slack("U01"))
    rejected = await core.reject(request.id, slack("U02"), "not this week")
    assert rejected.request.state == "rejected"
    await tamper(core, "DELETE FROM approvals WHERE approve = :f", f=False)
    problems = await tamper(
        core,
        "UPDATE promotion_requests SET state = 'open', closed_at = NULL, closed_by = NULL, "
        "close_reason = NULL WHERE id = :r",
        r=request.id,
    )
    assert problems == [
        f"{request.code} has a rejection by U02 in the audit log but no row for it (deleted "
        "from the database directly?)",
        f"{request.code} is open, but the audit log recorded it rejected (reopened in the "
        "database directly?)",
    ]
    with pytest.raises(RequestClosed, match=f"{request.code} is rejected by U02: not this week"):
        await core.approve(request.id, slack("U06"))
    shown = await core.request(request.id)
    assert [(d.user, d.approve) for d in shown.decisions] == [("U01", True), ("U02", False)]
    assert ("integrity", "failed") in [(c.gate, c.state) for c in shown.checks]
    assert shown.state == "open"  # never promoted


async def test_a_failed_test_run_deleted_from_the_database_still_closes_the_gate(
    core: Promptship,
) -> None:
    await push(core)
    await pass_tests(core, "customer-support", "1.0.0")
    await pass_tests(core, "customer-support", "1.0.0", passed=2, failed=8)
    problems = await tamper(
        core, "DELETE FROM validation_runs WHERE id = (SELECT MAX(id) FROM validation_runs)"
    )
    assert problems == [
        "customer-support 1.0.0 has a finished test run in the audit log but no row for it "
        "(deleted from the database directly?)"
    ]
    with pytest.raises(GateRefused, match="the test run's record does not match its signed"):
        await core.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))


async def test_a_failed_soak_deleted_from_the_database_still_closes_the_gate(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("environments: {production: {soak: 1h}}"), clock)
    await push(core)
    await to_staging(core)
    passed = await core.staging_soak_id("customer-support", "1.0.0")
    assert passed is not None
    await core.finish_soak(passed, passed=True)
    restarted = await core.restart_soak("customer-support", slack("U01"))
    await core.finish_soak(restarted.id, passed=False, failure="cycle 2 diverged 31% > 10%")
    await tamper(core, "DELETE FROM soak_cycles WHERE soak_id = :s", s=restarted.id)
    problems = await tamper(core, "DELETE FROM soak_runs WHERE id = :s", s=restarted.id)
    assert problems == [
        "the soak of customer-support 1.0.0 is in the audit log but has no row (deleted from "
        "the database directly?)"
    ]
    with pytest.raises(GateRefused, match="the soak's record does not match its signed"):
        await core.request_promotion("customer-support", "1.0.0", "production", slack(REQUESTER))
