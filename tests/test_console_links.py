"""Slack messages link to the web console where they cut content, under PROMPTSHIP_PUBLIC_URL;
without one they are exactly as before, command hints and all."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.blocks import messages
from bot.blocks.common import Message
from bot.blocks.links import ConsoleLinks
from bot.dispatcher import render
from promptship.config import Settings
from promptship.server import create_app
from promptship.services.outbox import Delivery
from promptship.services.views import (
    DiffEvidence,
    RequestEvidence,
    RequestView,
    RunView,
    SoakView,
)
from promptship.testing.slack_double import SlackDouble, block_problems
from tests.conftest import make_policy
from tests.helpers import case_results, slack
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, ServerThread, wait_for
from tests.test_slack_app import NAME, Bot, texts

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CONSOLE = ConsoleLinks.from_public_url("https://ship.example.com/promptship/")
#: build metadata makes a version with a character that must be encoded in a path
VERSION = "1.2.0+build.7"
ENCODED = "1.2.0%2Bbuild.7"


def text_of(message: Message) -> str:
    return json.dumps(message.blocks, ensure_ascii=False)


def links(message: Message) -> dict[str, str]:
    """The mrkdwn links of a message: label -> URL (as Slack reads it, unescaped)."""
    found = re.findall(r"<(https?://[^|>]+)\|([^>]+)>", text_of(message))
    return {label: url.replace("&amp;", "&") for url, label in found}


def assert_fits(message: Message) -> None:
    assert block_problems(message.blocks, limit=50) == []


def run(failed: int = 30) -> RunView:
    return RunView(
        id=1,
        state="failed",
        total=100,
        passed=100 - failed,
        failed=failed,
        errored=0,
        pass_rate=(100 - failed) / 100,
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=9),
        regressions=[],
        regression_override=None,
        error=None,
    )


FAILURES = [{"type": "contains", "input": "q", "expected": "a", "got": "b"}] * 12


def soak(soak_id: int = 7) -> SoakView:
    return SoakView(
        id=soak_id,
        version=VERSION,
        environment="staging",
        kind="staging-shadow",
        state="running",
        started_at=NOW,
        ends_at=NOW + timedelta(hours=24),
        finished_at=None,
        cycles_done=2,
        cycles_total=24,
        worst_divergence=0.05,
        failure=None,
    )


def soak_alert(**extra: Any) -> dict[str, Any]:
    return {"prompt": "support.bot", "version": VERSION, "kind": "staging-shadow", **extra}


def request(diff: DiffEvidence) -> RequestView:
    return RequestView(
        id=42,
        code="req-42",
        prompt="support.bot",
        version=VERSION,
        content_hash="f" * 64,
        environment="production",
        kind="promotion",
        state="open",
        requester="U01",
        author="U02",
        reason=None,
        required_approvals=1,
        decisions=[],
        checks=[],
        created_at=NOW,
        expires_at=NOW + timedelta(days=3),
        closed_at=None,
        closed_by=None,
        close_reason=None,
        evidence=RequestEvidence(
            as_of=NOW,
            into_production=True,
            production_version="1.1.0",
            tests=None,
            soak=None,
            diff=diff,
        ),
    )


SMALL_DIFF = DiffEvidence(against="1.1.0", lines=["-old & <tone>", "+new"], added=1, removed=1)
HUGE_DIFF = DiffEvidence(against="1.1.0", lines=[], added=900, removed=800, too_large=True)


def test_the_validation_result_links_its_full_report_filtered_to_failed() -> None:
    plain = messages.run_message("support.bot", VERSION, run(), FAILURES)
    linked = messages.run_message("support.bot", VERSION, run(), FAILURES, CONSOLE)
    assert links(plain) == {}
    assert links(linked) == {
        "Full report": f"https://ship.example.com/promptship/prompts/support.bot/{ENCODED}"
        "?show=problems"
    }
    # the CLI hint stays beside the link, and the rest of the message is unchanged
    assert "all results: `promptship test support.bot" in text_of(linked)
    assert linked.blocks[:-1] == plain.blocks[:-1] and linked.text == plain.text
    assert_fits(linked)


def test_drift_links_the_full_report() -> None:
    payload = {
        "prompt": "support.bot",
        "version": VERSION,
        "run": run().model_dump(mode="json"),
        "failures": [{"input": "q", "got": "b"}] * 9,
    }
    plain = messages.drift_message(payload)
    linked = messages.drift_message(payload, CONSOLE)
    assert links(plain) == {}
    assert links(linked)["Full report"].endswith(f"/prompts/support.bot/{ENCODED}?show=problems")
    assert linked.blocks[:-1] == plain.blocks
    assert_fits(linked)


@pytest.mark.parametrize("diff", [SMALL_DIFF, HUGE_DIFF], ids=["shown", "too large"])
def test_the_approval_message_links_the_full_diff(diff: DiffEvidence) -> None:
    plain = messages.request_message(request(diff))
    linked = messages.request_message(request(diff), console=CONSOLE)
    assert links(plain) == {}
    assert links(linked) == {
        "Full diff": "https://ship.example.com/promptship/prompts/support.bot/diff/1.1.0/" + ENCODED
    }
    for message in (plain, linked):  # the command hints stay either way
        assert f"/prompt diff support.bot 1.1.0 {VERSION}" in text_of(message)
    assert_fits(linked)


def test_soak_alerts_link_their_chart_and_old_alerts_without_an_id_still_render() -> None:
    failed = soak_alert(soak_id=7, failure="12 of 40 answers diverged", worst=[])
    for payload in (soak_alert(soak_id=7), failed):
        linked = messages.soak_result_message(payload, CONSOLE)
        assert links(linked) == {"Soak chart": "https://ship.example.com/promptship/soaks/7"}
        assert_fits(linked)
        assert links(messages.soak_result_message(payload)) == {}
    # an alert queued before alerts carried the soak's id: no link, the same message as before
    old = soak_alert(failure="12 of 40 answers diverged", worst=[])
    assert messages.soak_result_message(old, CONSOLE) == messages.soak_result_message(old)
    assert links(messages.soak_result_message(soak_alert(), CONSOLE)) == {}


def test_soak_status_and_restart_link_each_chart() -> None:
    status = messages.soak_message([soak(7), soak(6)], CONSOLE)
    assert re.findall(r"/soaks/(\d+)\|Soak chart", text_of(status)) == ["7", "6"]
    assert links(messages.soak_message([soak(7)])) == {}
    restarted = messages.soak_restarted_message("support.bot", soak(8), "U01", CONSOLE)
    assert links(restarted) == {"Soak chart": "https://ship.example.com/promptship/soaks/8"}
    assert "`/prompt soak support.bot`" in text_of(restarted)
    assert links(messages.soak_restarted_message("support.bot", soak(8), "U01")) == {}


def test_a_long_soak_list_links_only_whole_lines_and_stays_in_limits() -> None:
    status = messages.soak_message([soak(i) for i in range(200)], CONSOLE)
    assert_fits(status)
    body = status.blocks[0]["text"]["text"]
    assert body.count("<https://") == body.count("|Soak chart>") > 0  # no link cut in half


def test_the_outbox_renders_with_the_configured_console() -> None:
    delivery = Delivery(1, "soak.passed", "C1", None, soak_alert(soak_id=3), 0, None)
    message, _ = render(delivery, CONSOLE)
    assert links(message) == {"Soak chart": "https://ship.example.com/promptship/soaks/3"}
    assert links(render(delivery)[0]) == {}


@pytest.mark.parametrize(
    ("public_url", "base"),
    [
        ("https://ship.example.com", "https://ship.example.com/"),
        ("  http://localhost:8080/ ", "http://localhost:8080/"),
        ("https://ship.example.com/a b|c", "https://ship.example.com/a%20b%7Cc/"),
        ("https://ship.example.com/a&b=<2>", "https://ship.example.com/a&b=%3C2%3E/"),
        ("https://ship.example.com/ps/?next=1#top", "https://ship.example.com/ps/"),
    ],
)
def test_a_public_url_is_made_safe_for_a_mrkdwn_link(public_url: str, base: str) -> None:
    console = ConsoleLinks.from_public_url(public_url)
    assert console is not None and console.base == base
    message = messages.soak_restarted_message("p", soak(1), "U01", console)
    body = message.blocks[0]["text"]["text"]
    link = body[body.index("<http") :]
    assert "|" not in link[: link.index("|Soak chart>")]  # the label starts at the only |
    assert "&b=" not in link and ("&amp;b=" in link) == ("&" in public_url)


@pytest.mark.parametrize(
    "public_url", [None, "", "   ", "ship.example.com", "javascript:alert(1)", "https://x/" * 40]
)
def test_without_a_usable_public_url_there_are_no_links(public_url: str | None) -> None:
    assert ConsoleLinks.from_public_url(public_url) is None


def test_the_served_bot_links_its_posts_under_the_public_url(tmp_path: Path) -> None:
    """The real app with PROMPTSHIP_PUBLIC_URL: the validation result it posts links the
    version page's failed cases."""
    policy = make_policy()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    with SlackDouble(token=BOT_TOKEN) as double:
        settings = Settings(
            PROMPTSHIP_DATABASE_URL=db_url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=double.api_url,
            PROMPTSHIP_PUBLIC_URL="https://ship.example.com",
        )
        with ServerThread(create_app(settings, policy)) as server:
            bot = Bot(server.url, double, db_url, policy)
            try:
                bot.push()
                bot.core(
                    lambda c: c.record_validation_run(
                        NAME, "1.0.0", case_results(8, failed=2), slack("U04")
                    )
                )
                [post] = wait_for(
                    lambda: bot.posts(lambda a: f"Tests of {NAME} 1.0.0" in a.get("text", "")),
                    what="the validation result in the channel",
                )
                url = f"https://ship.example.com/prompts/{NAME}/1.0.0?show=problems"
                assert f"<{url}|Full report>" in texts(post)
            finally:
                bot.slack.close()
        assert double.refused == []
