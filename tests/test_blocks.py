"""Every block builder stays inside Slack's limits, whatever it is fed, and escapes what
people and prompts wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.blocks import messages, views
from bot.blocks.limits import code, escape, truncate
from promptship.services.views import (
    AuditEventView,
    CheckView,
    DecisionOutcome,
    DecisionView,
    DeploymentView,
    HistoryPage,
    PromptStatus,
    RequestView,
    RollbackResult,
    RunView,
    SettingChange,
    SoakView,
    VersionDetail,
    VersionDiff,
)
from promptship.testing.slack_double import block_problems

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HUGE = "<!channel> & " + "x" * 50_000


def request(reason: str = HUGE, decisions: int = 30, state: str = "open") -> RequestView:
    return RequestView(
        id=42,
        code="req-42",
        prompt="p" * 64,
        version="1.0.0-" + "a" * 100,
        content_hash="f" * 64,
        environment="production",
        kind="breakglass",
        state=state,
        requester="U" + "1" * 200,
        author="alice <!here>",
        reason=reason,
        required_approvals=3,
        decisions=[
            DecisionView(user=f"U{i:04d}", approve=True, comment=HUGE, roles=["approvers"], at=NOW)
            for i in range(decisions)
        ],
        checks=[CheckView(gate=f"gate {i}", state="waiting", detail=HUGE) for i in range(20)],
        created_at=NOW,
        expires_at=NOW + timedelta(days=3),
        closed_at=None if state == "open" else NOW,
        closed_by=None if state == "open" else "U01",
        close_reason=None if state == "open" else HUGE,
    )


def assert_fits(message: messages.Message) -> None:
    assert block_problems(message.blocks, limit=50) == []
    assert 0 < len(message.text) <= 40_000
    assert "<!channel>" not in json.dumps(message.blocks)


def test_request_message_fits_open_and_closed() -> None:
    for state in ("open", "rejected", "promoted", "expired"):
        message = messages.request_message(request(state=state))
        assert_fits(message)
        has_buttons = any(b["type"] == "actions" for b in message.blocks)
        assert has_buttons == (state == "open")


def test_buttons_are_exactly_approve_and_reject_with_confirm_dialogs() -> None:
    actions = next(b for b in messages.request_message(request()).blocks if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]] == ["Approve", "Reject"]
    for element in actions["elements"]:
        assert len(element["value"]) < 200 and element["confirm"]["confirm"]["text"] in (
            "Approve",
            "Reject",
        )


def test_long_text_is_cut_with_a_visible_pointer() -> None:
    text = truncate("a" * 5000, 3000, "/prompt show p 1.0.0")
    assert len(text) == 3000 and text.endswith("… (full text: /prompt show p 1.0.0)")
    cut = truncate(escape("&" * 4000), 100).removesuffix("…")
    assert cut.endswith("&amp;") and len(cut) <= 99  # never half an escape sequence


def test_every_other_builder_fits_with_oversized_input() -> None:
    run = RunView(
        id=1,
        state="failed",
        total=500,
        passed=0,
        failed=400,
        errored=100,
        pass_rate=0.0,
        started_at=NOW,
        finished_at=NOW + timedelta(minutes=3),
        regressions=[HUGE] * 50,
        regression_override=None,
        error=HUGE,
    )
    failures = [
        {
            "input": HUGE,
            "type": "score",
            "expected": HUGE,
            "got": HUGE,
            "why": HUGE,
            "errored": i % 2 == 0,
        }
        for i in range(500)
    ]
    detail = VersionDetail(
        name="p",
        version="1.0.0",
        status="draft",
        content_hash="f" * 64,
        author="U01",
        created_at=NOW,
        model="m" * 200,
        provider="anthropic",
        temperature=0.7,
        max_tokens=500,
        system_prompt=HUGE,
        description=HUGE,
        tests=[{"input": HUGE}] * 100,
        environments=["staging"],
        latest_run=None,
    )
    diff = VersionDiff(
        name="p",
        old_version="1.0.0",
        new_version="2.0.0",
        settings=[SettingChange(key=f"k{i}", old=HUGE, new=HUGE) for i in range(60)],
        system_prompt_diff=HUGE,
        tests_added=[HUGE] * 100,
        tests_removed=[HUGE] * 100,
    )
    statuses = [
        PromptStatus(
            name=f"prompt-{i}",
            latest_version="1.0.0",
            versions=3,
            environments=[
                DeploymentView(
                    environment="production",
                    version="1.0.0",
                    status="production",
                    deployed_at=NOW,
                    deployed_by="U01",
                    revision=1,
                )
            ],
            open_requests=[request(decisions=2)] * 3,
        )
        for i in range(1000)
    ]
    events = [
        AuditEventView(
            seq=i,
            at=NOW,
            actor=HUGE,
            action="request.approved",
            prompt="p",
            version="1.0.0",
            environment="production",
            request_id=1,
            details={},
        )
        for i in range(200)
    ]
    soaks = [
        SoakView(
            id=i,
            version="1.0.0",
            environment="staging",
            kind="staging-shadow",
            state="failed",
            started_at=NOW,
            ends_at=NOW,
            finished_at=NOW,
            cycles_done=24,
            worst_divergence=0.5,
            failure=HUGE,
        )
        for i in range(100)
    ]
    built = [
        messages.run_message("p", "1.0.0", run, failures),
        messages.decision_reply(DecisionOutcome(request=request(), recorded=True, message=HUGE)),
        messages.rollback_message(
            RollbackResult(
                prompt="p",
                environment="production",
                from_version="2.0.0",
                to_version="1.0.0",
                actor=HUGE,
                reason=HUGE,
                at=NOW,
            )
        ),
        messages.status_message(statuses, ("dev", "staging", "production")),
        messages.version_message(detail),
        messages.diff_message(diff),
        messages.help_message(),
        messages.error_message(HUGE, HUGE),
        messages.history_message(
            HistoryPage(prompt="p", environment=None, events=events, next_before=5)
        ),
        messages.soak_message(soaks),
        messages.soak_result_message(
            {
                "prompt": "p",
                "version": "1.0.0",
                "kind": "breakglass-production",
                "cycle": 3,
                "failure": HUGE,
                "summary": HUGE,
                "worst": [{"input": HUGE, "candidate": HUGE, "baseline": HUGE, "similarity": 0.1}]
                * 50,
                "oncall": ["U03", "S0ONCALL"] * 500,
            }
        ),
        messages.soak_result_message({"prompt": "p", "version": "1.0.0", "kind": "staging-shadow"}),
        messages.drift_message(
            {
                "prompt": "p",
                "version": "1.0.0",
                "run": run.model_dump(mode="json"),
                "min_pass_rate": 0.8,
                "failures": failures,
            }
        ),
    ]
    for message in built:
        assert_fits(message)

    home = views.home_view("U01", statuses, ("dev", "staging", "production"), events)
    assert block_problems(home["blocks"], limit=100) == []
    running = [
        s.model_copy(update={"state": "running", "cycles_total": 24, "next_at": NOW}) for s in soaks
    ]
    home = views.home_view(
        "U01",
        statuses,
        ("dev", "staging", "production"),
        events,
        {s.name: running for s in statuses},
    )
    assert block_problems(home["blocks"], limit=100) == []
    assert "soak of `1.0.0` in staging: 24/24 cycles, next at" in json.dumps(home["blocks"])
    modal = views.reject_modal('{"r": 42, "h": "ffffffffffff", "c": "C1"}', HUGE)
    assert block_problems(modal["blocks"], limit=100) == []
    assert len(modal["title"]["text"]) <= 24


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=500))
def test_whatever_a_person_writes_is_escaped(reason: str) -> None:
    message = messages.request_message(request(reason=reason, decisions=1))
    body = json.dumps(message.blocks)
    assert "<!" not in body and "<http" not in body
    assert block_problems(message.blocks, limit=50) == []


@settings(max_examples=100, deadline=None)
@given(server=st.text(max_size=5000), name=st.text(max_size=64))
def test_a_token_message_fits_escapes_and_keeps_the_secret_out_of_the_preview(
    server: str, name: str
) -> None:
    from bot.blocks.tokens import token_message, token_revoked_message
    from promptship.services.views import IssuedToken, TokenView

    token = TokenView(
        id=7, prefix="psk_AbC12dEf", subject="U01", service=False, scope="approve",
        name=name or None, created_at=NOW, created_by="U01", expires_at=NOW + timedelta(days=90),
        revoked_at=None, last_used_at=None,
    )  # fmt: skip
    secret = "psk_AbC12dEf" + "x" * 31
    message = token_message(IssuedToken(secret=secret, token=token), server or None)
    body = json.dumps(message.blocks)
    assert block_problems(message.blocks, limit=50) == []
    assert "<!" not in body and "<http" not in body
    assert f"export PROMPTSHIP_TOKEN={secret}" in body and secret not in message.text
    assert "/prompt token revoke psk_AbC12dEf" in body and "until 2026-04-01" in body
    revoked = token_revoked_message(token)
    assert block_problems(revoked.blocks, limit=50) == [] and "psk_AbC12dEf" in revoked.text


@given(st.text(alphabet="`ab\n", max_size=60))
def test_backticks_in_shown_text_never_close_its_code_block(text: str) -> None:
    """A system prompt holding ``` stays inside its preformatted block: the only fences are
    the block's own, and the text reads the same without the zero-width spaces."""
    shown = code(text)["text"]["text"]
    inner = shown[3:-3]
    assert shown.startswith("```") and shown.endswith("```")
    assert "``" not in inner and not inner.startswith("`") and not inner.endswith("`")
    assert inner.replace("\u200b", "") == text
