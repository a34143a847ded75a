"""The Slack bot end to end: the real Bolt app served over HTTP, signed requests, and the
Slack Web API double enforcing Slack's limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptship.config import Policy, Settings
from promptship.domain.promptfile import parse_prompt
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import AUTHOR, case_results, slack
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, ServerThread, SlackClient, sign, wait_for

NAME = "customer-support"


class Bot:
    """The running app, the Slack double it talks to, and a way to set state up."""

    def __init__(self, url: str, double: SlackDouble, db_url: str, policy: Policy) -> None:
        self.slack = SlackClient(url, double)
        self.double = double
        self.db_url = db_url
        self.policy = policy

    def core(self, use: Callable[[Promptship], Any]) -> Any:
        async def go() -> Any:
            db = Database(self.db_url)
            try:
                return await use(Promptship(db, self.policy))
            finally:
                await db.dispose()

        return asyncio.run(go())

    def push(self, version: str = "1.0.0", **kw: Any) -> None:
        self.core(lambda c: c.push(parse_prompt(prompt_yaml(NAME, version, **kw)), slack(AUTHOR)))

    def tested(self, version: str = "1.0.0", passed: int = 10) -> None:
        self.core(
            lambda c: c.record_validation_run(NAME, version, case_results(passed), slack("U04"))
        )

    def reply(self, key: str) -> dict[str, Any]:
        return wait_for(lambda: self.double.responses(key), what=f"a reply on {key}")[-1]

    def posts(
        self, predicate: Callable[[dict[str, Any]], bool] = lambda a: True
    ) -> list[dict[str, Any]]:
        return [a for a in self.double.calls("chat.postMessage") if predicate(a)]


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[Bot]:
    policy = make_policy()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    with SlackDouble(token=BOT_TOKEN, usergroups={"S0GROUP": ["U05"]}) as double:
        app = create_app(
            Settings(
                PROMPTSHIP_DATABASE_URL=db_url,
                SLACK_BOT_TOKEN=BOT_TOKEN,
                SLACK_SIGNING_SECRET=SIGNING_SECRET,
                SLACK_API_URL=double.api_url,
            ),
            policy,
        )
        with ServerThread(app) as server:
            bot = Bot(server.url, double, db_url, policy)
            yield bot
            bot.slack.close()
        assert double.refused == [], "every message and view the bot sent must pass Slack's limits"


def texts(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []), ensure_ascii=False) + message.get("text", "")


def test_help_is_acked_at_once_and_answered(bot: Bot) -> None:
    started = time.monotonic()
    response, key = bot.slack.command("help")
    assert response.status_code == 200
    assert time.monotonic() - started < 3
    reply = bot.reply(key)
    assert reply["response_type"] == "ephemeral"
    assert "/prompt promote &lt;name&gt; &lt;version&gt; &lt;env&gt;" in texts(reply)


def test_forged_and_stale_requests_are_refused(bot: Bot) -> None:
    body = "command=%2Fprompt&text=help&user_id=U04"
    forged = bot.slack.http.post(
        "/slack/events",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **sign(body, secret="wrong-secret"),
        },
    )
    assert forged.status_code == 401
    stale = bot.slack.http.post(
        "/slack/events",
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **sign(body, timestamp=int(time.time()) - 600),
        },
    )
    assert stale.status_code == 401
    assert bot.double.all_responses() == {}


def test_bad_command_text_gets_the_right_form(bot: Bot) -> None:
    _, key = bot.slack.command("promote customer-support 2.1.0")
    reply = bot.reply(key)
    assert reply["response_type"] == "ephemeral"
    assert "missing the environment" in texts(reply)
    assert "/prompt promote &lt;name&gt;" in texts(reply)
    _, key = bot.slack.command("status no-such-prompt")
    assert "no prompt named" in texts(bot.reply(key))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=80))
def test_any_text_gets_an_ack_and_a_reply(bot: Bot, text: str) -> None:
    response, key = bot.slack.command(text)
    assert response.status_code == 200
    reply = bot.reply(key)
    assert reply.get("blocks") and reply.get("text")


def test_promotion_from_chat_with_two_approvals_by_button(bot: Bot) -> None:
    bot.push()
    bot.tested()
    _, key = bot.slack.command("promote customer-support@1.0.0 staging")
    assert "Promoted" in texts(bot.reply(key))

    _, key = bot.slack.command("promote customer-support 1.0.0 production Q3 tone <!channel>")
    reply = bot.reply(key)
    assert "&lt;!channel&gt;" in texts(reply) and "<!channel>" not in texts(reply)

    request = wait_for(
        lambda: bot.posts(lambda a: "Promotion request req-2" in a.get("text", "")),
        what="the request post",
    )[0]
    actions = next(b for b in request["blocks"] if b["type"] == "actions")
    labels = [e["text"]["text"] for e in actions["elements"]]
    assert labels == ["Approve", "Reject"] and all("confirm" in e for e in actions["elements"])
    value = actions["elements"][0]["value"]

    _, key = bot.slack.click("approve", value, user="U04")  # the requester
    assert "you requested req-2" in texts(bot.reply(key))
    _, key = bot.slack.click("approve", value, user="U08")  # holds no role
    assert "only approvers can approve" in texts(bot.reply(key))
    _, key = bot.slack.click("approve", value, user="U01")
    assert "1/2 approvals" in texts(bot.reply(key))
    _, key = bot.slack.click("approve", value, user="U01")  # double click
    assert "already approved" in texts(bot.reply(key))
    _, key = bot.slack.click("approve", value, user="U05")  # an approver through S0GROUP
    assert "is now in production" in texts(bot.reply(key))

    final = wait_for(
        lambda: [u for u in bot.double.calls("chat.update") if "(promoted)" in u.get("text", "")],
        what="the request message updated to promoted",
    )[-1]
    assert final["ts"] == bot.posts(lambda a: "req-2" in a.get("text", ""))[0].get(
        "ts", final["ts"]
    )
    assert not any(b["type"] == "actions" for b in final["blocks"])
    # who clicked is Slack's signed word, and the audit says so
    events = bot.core(lambda c: c.recent_events(50))
    approved = {(e.actor, e.details["auth"]) for e in events if e.action == "request.approved"}
    assert approved == {("U01", "slack"), ("U05", "slack")}
    assert "unverified" not in texts(final)


def test_reject_by_modal(bot: Bot) -> None:
    bot.push()
    bot.tested()
    bot.slack.command("promote customer-support 1.0.0 staging")
    _, key = bot.slack.command("promote customer-support 1.0.0 production")
    bot.reply(key)
    request = wait_for(lambda: bot.posts(lambda a: "req-2" in a.get("text", "")), what="request")[0]
    value = next(b for b in request["blocks"] if b["type"] == "actions")["elements"][1]["value"]
    bot.slack.click("reject", value, user="U02")
    modal = wait_for(lambda: bot.double.calls("views.open"), what="the modal")[0]["view"]
    assert modal["callback_id"] == "reject_reason"
    empty = bot.slack.submit_view("reject_reason", modal["private_metadata"], "  ", user="U02")
    assert empty.json()["response_action"] == "errors"
    ok = bot.slack.submit_view(
        "reject_reason", modal["private_metadata"], "fails refunds on mobile", user="U02"
    )
    assert ok.status_code == 200
    note = wait_for(lambda: bot.double.calls("chat.postEphemeral"), what="the ephemeral note")[0]
    assert note["user"] == "U02" and "you rejected req-2" in note["text"]
    wait_for(
        lambda: [u for u in bot.double.calls("chat.update") if "(rejected)" in u.get("text", "")],
        what="the request message updated to rejected",
    )


def test_rollback_answers_at_once_and_tells_the_channel(bot: Bot) -> None:
    for version in ("1.0.0", "1.1.0"):
        bot.push(version, system_prompt=f"v{version}")
        bot.tested(version)

        async def promote(core: Promptship, v: str = version) -> None:
            await core.request_promotion(NAME, v, "staging", slack("U04"))
            request = await core.request_promotion(NAME, v, "production", slack("U04"))
            await core.approve(request.id, slack("U01"))
            await core.approve(request.id, slack("U02"))

        bot.core(promote)
    _, key = bot.slack.command("rollback customer-support production", user="U08")
    assert "only on-call or approvers" in texts(bot.reply(key))
    started = time.monotonic()
    _, key = bot.slack.command("rollback customer-support production answers got rude", user="U03")
    reply = bot.reply(key)
    assert time.monotonic() - started < 1.0
    assert reply["response_type"] == "in_channel"
    assert "`1.1.0` → `1.0.0`" in texts(reply)
    wait_for(
        lambda: bot.posts(lambda a: "rolled back" in a.get("text", "")), what="the channel post"
    )
    history = bot.core(lambda c: c.history(NAME, "production"))
    assert history.events[0].actor == "U03"


def test_breakglass_needs_three_approvals_and_says_so(bot: Bot) -> None:
    bot.push()
    bot.tested()
    _, key = bot.slack.command("breakglass customer-support 1.0.0")
    assert "break-glass needs a written reason" in texts(bot.reply(key))
    _, key = bot.slack.command("breakglass customer-support 1.0.0 refunds leak card numbers")
    bot.reply(key)
    post = wait_for(lambda: bot.posts(lambda a: "BREAK-GLASS" in a.get("text", "")), what="post")[0]
    assert "3 approvals" in texts(post)
    value = next(b for b in post["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    for user in ("U01", "U02"):
        _, key = bot.slack.click("approve", value, user=user)
        assert "you approved req-1" in texts(bot.reply(key))
    _, key = bot.slack.click("approve", value, user="U06")
    assert "is now in production" in texts(bot.reply(key))


def test_app_home_shows_prompts_and_pending_requests(bot: Bot) -> None:
    bot.push()
    bot.tested()
    _, key = bot.slack.command("promote customer-support 1.0.0 dev", user="U08")  # no role
    assert "customer-support dev → 1.0.0 by U08" in texts(bot.reply(key))
    bot.core(lambda c: c.request_promotion(NAME, "1.0.0", "staging", slack("U04")))
    bot.core(lambda c: c.request_promotion(NAME, "1.0.0", "production", slack("U04")))
    response = bot.slack.event(
        {"type": "app_home_opened", "user": "U01", "channel": "D0001", "tab": "home"}
    )
    assert response.status_code == 200
    home = wait_for(lambda: bot.double.calls("views.publish"), what="the home view")[0]
    assert home["user_id"] == "U01"
    body = json.dumps(home["view"])
    assert "Awaiting your decision* (1)" in body and "customer-support" in body
    assert "dev `1.0.0`" in body and "staging `1.0.0`" in body


def test_slack_outage_delays_but_never_loses_a_notification(bot: Bot) -> None:
    bot.push()
    bot.tested()
    bot.double.fail_next(3, status=429, method="chat.postMessage", retry_after=1)
    bot.double.fail_next(2, status=500, method="chat.postMessage")
    bot.core(lambda c: c.request_promotion(NAME, "1.0.0", "staging", slack("U04")))
    posted = wait_for(
        lambda: bot.posts(lambda a: "req-1" in a.get("text", "")), timeout=20, what="delivery"
    )
    assert len(posted) == 1


def test_commands_are_answered_while_a_500_case_scored_run_is_in_progress(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptship.testing.model_double import ModelDouble

    with ModelDouble(latency=0.05) as model:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.url)
        cases = [
            {
                "input": f"question {i}",
                "expected": f"answer about topic {i % 41}",
                "type": "score",
                "threshold": 0.5,
            }
            for i in range(500)
        ]
        bot.push(tests=cases)
        _, key = bot.slack.command("test customer-support 1.0.0")
        assert "Queued test run" in texts(bot.reply(key))
        wait_for(lambda: model.request_count >= 100, timeout=60, what="the run to be under way")
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            response, key = bot.slack.command("status")
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
            assert "customer-support" in texts(bot.reply(key))
        assert model.request_count < 500, "the run finished before the commands were answered"
        assert max(latencies) < 2.0, latencies  # Slack's limit is 3 s
        run = wait_for(
            lambda: bot.posts(lambda a: "Tests of customer-support 1.0.0" in a.get("text", "")),
            timeout=120,
            what="the result in the channel",
        )
        assert "500" in run[0]["text"]


def test_pending_notifications_survive_a_restart_and_are_delivered_once(tmp_path: Path) -> None:
    policy = make_policy()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    with SlackDouble(token=BOT_TOKEN, usergroups={"S0GROUP": ["U05"]}) as double:

        def server() -> ServerThread:
            settings = Settings(
                PROMPTSHIP_DATABASE_URL=db_url,
                SLACK_BOT_TOKEN=BOT_TOKEN,
                SLACK_SIGNING_SECRET=SIGNING_SECRET,
                SLACK_API_URL=double.api_url,
            )
            return ServerThread(create_app(settings, policy))

        double.fail_next(100, status=500, method="chat.postMessage")
        with server() as first:
            bot = Bot(first.url, double, db_url, policy)
            bot.push()
            bot.tested()
            bot.core(lambda c: c.request_promotion(NAME, "1.0.0", "staging", slack("U04")))
            wait_for(lambda: double.pending_failures < 100, what="a failed delivery")
        # Slack was down the whole time the first server ran: nothing arrived, nothing lost
        assert bot.posts() == []
        assert bot.core(lambda c: c.outbox_backlog()) > 0

        double.reset()  # Slack is back
        with server():
            posted = wait_for(
                lambda: bot.posts(lambda a: "req-1" in a.get("text", "")),
                timeout=30,
                what="delivery after the restart",
            )
            wait_for(lambda: bot.core(lambda c: c.outbox_backlog()) == 0, what="an empty outbox")
            time.sleep(1)  # a duplicate would show by now
        assert len(bot.posts(lambda a: "req-1" in a.get("text", ""))) == len(posted) == 1
        assert double.refused == []


def test_override_button_explains_what_went_wrong(bot: Bot) -> None:
    """Like Reject, the person who clicked hears why nothing opened."""
    _, stale = bot.slack.click("override", "not-json", user="U01")
    reply = bot.reply(stale)
    assert reply["response_type"] == "ephemeral"
    assert "this button is from an older message" in texts(reply)
    bot.double.refuse("views.open", "expired_trigger_id", times=None)
    _, key = bot.slack.click("override", json.dumps({"r": 1, "h": "abc"}), user="U01")
    reply = bot.reply(key)
    assert reply["response_type"] == "ephemeral"
    assert "Something went wrong on our side" in texts(reply)


def test_the_first_command_is_acked_while_slack_is_slow_to_say_who_the_bot_is(
    tmp_path: Path,
) -> None:
    """The bot's identity (auth.test) is looked up at start-up: when Slack rate-limits that
    call, the first command's ack does not wait through the retry."""
    policy = make_policy()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    with SlackDouble(token=BOT_TOKEN) as double:
        double.fail_next(1, status=429, method="auth.test", retry_after=10)
        settings = Settings(
            PROMPTSHIP_DATABASE_URL=db_url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=double.api_url,
        )
        with ServerThread(create_app(settings, policy)) as server:
            bot = Bot(server.url, double, db_url, policy)
            started = time.monotonic()
            response, key = bot.slack.command("help")
            assert response.status_code == 200
            assert time.monotonic() - started < 3  # the retry alone waits 10 s
            assert "/prompt promote" in texts(bot.reply(key))
            bot.slack.close()
        assert double.refused == []
