"""The outbox cannot be wedged: the real dispatcher delivers to the Slack Web API double, on
both databases. A permanent Slack error is not retried, a row that keeps failing is set aside
as a dead letter (and the channel told, once), the rows behind it go out in order, a 429 still
holds the line, and a long batch keeps its channel lease."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from typer.testing import CliRunner

from bot.dispatcher import SlackDispatcher
from promptship.cli import app
from promptship.clock import ManualClock
from promptship.errors import NotFound
from promptship.services import Promptship
from promptship.services.outbox import UNDELIVERED_TOPIC
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import TEST_POLICY, make_policy
from tests.helpers import push, to_production, to_staging
from tests.helpers import slack as as_slack_user

TOKEN = "xoxb-outbox-test"
CHANNEL = "C0PROMPTOPS"
OTHER = "C0OTHER"
NAME = "customer-support"


class HookedClient(AsyncWebClient):
    """The real Slack client; ``before_post`` runs before each chat.postMessage (to move the
    clock while a batch is under way, the way a slow Slack would)."""

    before_post: Callable[[], Any] | None = None

    async def chat_postMessage(self, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.before_post is not None:
            await self.before_post()
        return await super().chat_postMessage(**kwargs)


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    with SlackDouble(token=TOKEN) as double:
        yield double
        assert double.refused == [], "every message sent must pass Slack's limits"


@pytest.fixture
async def client(slack: SlackDouble) -> AsyncIterator[HookedClient]:
    yield HookedClient(token=TOKEN, base_url=slack.api_url)


def dispatcher(core: Promptship, client: AsyncWebClient, worker: str = "r1", **kw: Any) -> Any:
    return SlackDispatcher(core, client, worker, **kw)


def posts(slack: SlackDouble, channel: str = CHANNEL) -> list[dict[str, Any]]:
    return [a for a in slack.calls("chat.postMessage") if a.get("channel") == channel]


async def pending_ids(core: Promptship, channel: str = CHANNEL) -> list[int]:
    return [d.id for d in await core.due_notifications(channel, limit=100)]


async def test_a_deleted_request_message_is_posted_anew_and_later_updates_edit_the_new_one(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient
) -> None:
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", as_slack_user("U04"))
    sender = dispatcher(core, client)
    await sender.deliver_once()
    title = f"Promotion request {request.code}"
    (old_ts,) = [ts for ts, text in slack.messages_in(CHANNEL).items() if title in text]
    slack.delete_message(CHANNEL, old_ts)  # someone deleted the request message

    await core.approve(request.id, as_slack_user("U01"))
    await sender.deliver_once()
    anew = [p for p in posts(slack) if title in p["text"]]
    assert len(anew) == 2 and "thread_ts" not in anew[1], "a new top-level request message"
    (new_ts,) = [ts for ts, text in slack.messages_in(CHANNEL).items() if title in text]
    assert new_ts != old_ts and "(open)" in slack.messages_in(CHANNEL)[new_ts]
    refused = [u for u in slack.calls("chat.update") if u["ts"] == old_ts]
    assert len(refused) == 1  # message_not_found once, never retried

    await core.approve(request.id, as_slack_user("U02"))  # promoted: edits the new message in place
    await sender.deliver_once()
    assert "(promoted)" in slack.messages_in(CHANNEL)[new_ts]
    assert len([p for p in posts(slack) if title in p["text"]]) == 2
    assert await core.outbox_backlog() == 0 and await core.outbox_dead_letters() == []


async def test_an_uneditable_request_message_gets_its_update_as_a_thread_reply(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient
) -> None:
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(NAME, "1.0.0", "production", as_slack_user("U04"))
    sender = dispatcher(core, client)
    await sender.deliver_once()
    (parent,) = [
        ts
        for ts, text in slack.messages_in(CHANNEL).items()
        if f"Promotion request {request.code}" in text
    ]
    slack.refuse("chat.update", "edit_window_closed", times=None)
    await core.approve(request.id, as_slack_user("U01"))
    await sender.deliver_once()
    reply = posts(slack)[-1]
    assert reply["thread_ts"] == parent and f"request {request.code}" in reply["text"]
    assert "(open)" in reply["text"] and "1/2" in json.dumps(reply["blocks"])
    edits = [u for u in slack.calls("chat.update") if u["ts"] == parent]
    assert len(edits) == 1  # refused once, then posted: no retries
    assert await core.outbox_backlog() == 0 and await core.outbox_dead_letters() == []


async def test_an_archived_channel_sets_rows_aside_at_once_alerts_once_and_blocks_no_one(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient, clock: ManualClock
) -> None:
    other = Promptship(core.db, make_policy(f"channel: {OTHER}"), clock)
    await push(core)
    await to_staging(core)  # notifications to CHANNEL
    await push(other, "faq-bot")
    await to_staging(other, "faq-bot")  # notifications to OTHER
    slack.archive_channel(CHANNEL)
    doomed = await pending_ids(core)
    assert doomed

    sender = dispatcher(core, client)
    for _ in range(3):  # the alerts are themselves refused: they must not beget alerts
        await sender.deliver_once()
    dead = await core.outbox_dead_letters()
    originals = [d for d in dead if d.topic != UNDELIVERED_TOPIC]
    alerts = [d for d in dead if d.topic == UNDELIVERED_TOPIC]
    assert [d.id for d in originals] == doomed
    assert all(d.attempts == 1 and d.error == "is_archived" for d in dead)
    assert len(alerts) == len(originals)  # one alert per row, none about an alert
    assert await core.outbox_backlog() == 0 and await pending_ids(core) == []
    assert (await core.metrics_snapshot())["outbox_dead_letters"] == len(dead)
    attempts = len(slack.calls("chat.postMessage"))
    await sender.deliver_once()
    assert len(slack.calls("chat.postMessage")) == attempts  # nothing left to retry
    # the other channel got everything, in order
    assert posts(slack, OTHER) and all("faq-bot" in p["text"] for p in posts(slack, OTHER))
    assert await pending_ids(core, OTHER) == []


async def test_a_row_behind_a_dead_one_is_delivered_in_order_and_the_channel_told(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient
) -> None:
    await push(core)
    await to_staging(core)
    due = await core.due_notifications(CHANNEL)
    assert len(due) >= 3
    slack.refuse("chat.postMessage", "msg_too_long")  # the first post, once
    await dispatcher(core, client).deliver_once()
    await dispatcher(core, client).deliver_once()  # the alert queued behind them
    (dead,) = await core.outbox_dead_letters()
    assert dead.id == due[0].id and dead.error == "msg_too_long" and dead.attempts == 1
    texts = [p["text"] for p in posts(slack)]
    delivered = len(due) - 1
    assert len(texts) == delivered + 1
    alert = texts[-1]
    assert "could not be delivered" in alert and due[0].topic in alert and "msg_too_long" in alert
    assert "promptship outbox list" in alert
    assert await core.outbox_backlog() == 0


async def test_a_429_is_retried_after_retry_after_and_holds_the_line(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient, clock: ManualClock
) -> None:
    await push(core)
    await to_staging(core)
    due = await pending_ids(core)
    slack.fail_next(2, status=429, method="chat.postMessage", retry_after=30)
    sender = dispatcher(core, client, max_attempts=3)
    assert await sender.deliver_once() == 0
    assert await pending_ids(core) == []  # the first waits 30 s; nothing overtakes it
    clock.advance(31)
    assert await sender.deliver_once() == 0  # a second 429
    clock.advance(31)
    assert await sender.deliver_once() == len(due)  # the third try is the last allowed: it works
    assert await core.outbox_dead_letters() == [] and await core.outbox_backlog() == 0
    texts = [p["text"] for p in posts(slack)]
    assert texts[0].startswith("Tests of customer-support")  # the one held back went first
    assert "Promotion request" in texts[1]


async def test_a_row_failing_n_times_becomes_a_dead_letter_and_the_rest_go_out(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient, clock: ManualClock
) -> None:
    await push(core)
    await to_staging(core)
    due = await core.due_notifications(CHANNEL)
    slack.fail_next(100, status=500, method="chat.postMessage")
    sender = dispatcher(core, client, max_attempts=4)
    for attempt in range(1, 4):
        assert await sender.deliver_once() == 0
        (waiting, *_) = await core.due_notifications(CHANNEL) or [None]
        assert waiting is None  # backing off, holding the line
        clock.advance(300)
        assert (await core.due_notifications(CHANNEL))[0].attempts == attempt
    await sender.deliver_once()  # the 4th failure: set aside
    (dead,) = await core.outbox_dead_letters()
    assert dead.id == due[0].id and dead.attempts == 4 and dead.error == "internal_error"
    slack.reset()  # Slack is back
    clock.advance(300)
    await sender.deliver_once()
    await sender.deliver_once()
    texts = [p["text"] for p in posts(slack)]
    assert "Promotion request req-1" in texts[0]  # the rest went out …
    assert "(promoted)" in slack.messages_in(CHANNEL)[min(slack.messages_in(CHANNEL))]
    assert "could not be delivered" in texts[-1] and "internal_error" in texts[-1]  # … told
    assert await core.outbox_backlog() == 0


async def test_a_batch_longer_than_the_lease_keeps_it(
    core: Promptship, slack: SlackDouble, client: HookedClient, clock: ManualClock
) -> None:
    await push(core)
    await to_staging(core)
    for version in ("1.1.0", "1.2.0"):
        await push(core, version=version)
        await to_staging(core, version=version)
    due = await pending_ids(core)
    assert len(due) >= 6
    stolen: list[bool] = []

    async def slow_slack() -> None:
        clock.advance(4)  # each post takes 4 s: the batch outlasts a 10 s lease
        stolen.append(await core.lease_outbox_channel(CHANNEL, "r2", seconds=10))

    client.before_post = slow_slack
    sent = await dispatcher(core, client, lease_seconds=10).deliver_once()
    assert sent == len(due) and stolen and not any(stolen)
    assert len(stolen) * 4 > 10


async def test_a_worker_that_lost_its_lease_stops_sending(
    core: Promptship, slack: SlackDouble, client: HookedClient, clock: ManualClock
) -> None:
    await push(core)
    await to_staging(core)
    await push(core, version="1.1.0")
    await to_staging(core, version="1.1.0")
    due = await pending_ids(core)
    calls = 0

    async def stalled() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # r1 stalls past its lease and r2 takes the channel over
            clock.advance(11)
            assert await core.lease_outbox_channel(CHANNEL, "r2", seconds=10)

    client.before_post = stalled
    sent = await dispatcher(core, client, lease_seconds=10).deliver_once()
    assert sent == 2  # the post under way finishes; then r1 sees the lease is gone
    client.before_post = None
    await core.release_outbox_channel(CHANNEL, "r2")
    assert await dispatcher(core, client, worker="r2").deliver_once() == len(due) - 2
    texts = [p["text"] for p in posts(slack)]
    # two test results and two request messages, each once: r2 resent nothing r1 had sent
    assert len(texts) == len(set(texts)) == 4
    assert await core.outbox_backlog() == 0


@pytest.mark.parametrize("failure", ["uneditable", "server_error"])
async def test_a_rollback_alert_gets_through_while_an_earlier_update_keeps_failing(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient, clock: ManualClock, failure: str
) -> None:
    await push(core)
    await to_production(core)
    await push(core, version="1.1.0", system_prompt="v2")
    await to_staging(core, version="1.1.0")
    request = await core.request_promotion(NAME, "1.1.0", "production", as_slack_user("U04"))
    sender = dispatcher(core, client, max_attempts=5)
    await sender.deliver_once()
    await core.approve(request.id, as_slack_user("U01"))
    await core.approve(
        request.id, as_slack_user("U02")
    )  # two in-place updates of the request message
    if failure == "uneditable":
        slack.refuse("chat.update", "cant_update_message", times=None)
    else:
        slack.fail_next(1000, status=500, method="chat.update")
    await core.rollback(NAME, "production", as_slack_user("U03"), reason="answers got rude")

    def rolled_back() -> list[dict[str, Any]]:
        return [p for p in posts(slack) if "rolled back" in p["text"]]

    for _ in range(10):  # at most ~10 minutes of backoff in all
        await sender.deliver_once()
        if rolled_back():
            break
        clock.advance(300)
    assert rolled_back(), "the rollback alert must not wait behind a failing update"
    assert await core.outbox_backlog() <= 1  # at most the dead-letter alert, due next


async def dead_letters_in(core: Promptship, client: AsyncWebClient, slack: SlackDouble) -> None:
    """Staging notifications, all refused for good: the channel was archived."""
    await push(core)
    await to_staging(core)
    slack.archive_channel(CHANNEL)
    await dispatcher(core, client).deliver_once()
    await dispatcher(core, client).deliver_once()  # the alerts about them, refused too


async def test_dead_letters_are_retried_in_line_or_dropped_with_an_audit_event(
    core: Promptship, slack: SlackDouble, client: AsyncWebClient
) -> None:
    await dead_letters_in(core, client, slack)
    first, *rest = await core.outbox_dead_letters()
    assert rest  # more than one set aside
    with pytest.raises(NotFound, match="no dead letter with id 999"):
        await core.retry_dead_letters([999], as_slack_user("U03"))
    assert [d.id for d in await core.retry_dead_letters([first.id], as_slack_user("U03"))] == [
        first.id
    ]
    assert await pending_ids(core) == [first.id]  # back in line, first of its channel
    assert first.id not in [d.id for d in await core.outbox_dead_letters()]
    dropped = await core.drop_dead_letter(rest[0].id, as_slack_user("U03"))
    with pytest.raises(NotFound):
        await core.drop_dead_letter(rest[0].id, as_slack_user("U03"))
    event = (await core.recent_events(1))[0]
    assert event.action == "outbox.dropped" and event.actor == "U03"
    assert event.details["topic"] == dropped.topic and event.details["error"] == "is_archived"
    assert (await core.verify_audit()).ok
    slack.reset()
    retried = await core.retry_dead_letters(None, as_slack_user("U03"))
    assert [d.id for d in retried] == [d.id for d in rest[1:]]
    assert await core.outbox_dead_letters() == []


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    policy = tmp_path / "promptship.yaml"
    policy.write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", url)
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(policy))
    monkeypatch.delenv("PROMPTSHIP_USER", raising=False)
    yield url


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_outbox_list_retry_and_drop_from_the_command_line(cli_env: str, slack: SlackDouble) -> None:
    async def setup() -> None:
        db = Database(cli_env)
        try:
            await db.upgrade()
            core = Promptship(db, make_policy(), ManualClock())
            await dead_letters_in(core, HookedClient(token=TOKEN, base_url=slack.api_url), slack)
        finally:
            await db.dispose()

    asyncio.run(setup())
    code, out, _ = cli("outbox", "list", "--json")
    assert code == 0
    letters = json.loads(out)
    assert len(letters) >= 4 and {d["channel"] for d in letters} == {CHANNEL}
    assert set(letters[0]) == {"id", "topic", "channel", "attempts", "error", "dead_at"}
    assert all(d["error"] == "is_archived" and d["attempts"] == 1 for d in letters)
    code, out, _ = cli("outbox", "list")
    assert code == 0 and "is_archived" in out and letters[0]["topic"] in out

    code, _, err = cli("outbox", "retry")
    assert code == 2 and "ID or --all" in err
    code, _, err = cli("outbox", "retry", str(letters[0]["id"]))
    assert code == 2 and "who is acting" in err
    code, out, _ = cli("--as", "U03", "outbox", "retry", str(letters[0]["id"]), "--json")
    assert code == 0 and [d["id"] for d in json.loads(out)] == [letters[0]["id"]]
    code, _, err = cli("--as", "U03", "outbox", "drop", "999999")
    assert code == 2 and "no dead letter with id 999999" in err
    code, out, _ = cli("--as", "U03", "outbox", "drop", str(letters[1]["id"]))
    assert code == 0 and "dropped" in out
    code, out, _ = cli("audit", "export")
    dropped = [json.loads(line) for line in out.splitlines() if "outbox.dropped" in line]
    assert len(dropped) == 1 and dropped[0]["actor"] == "U03"
    code, out, _ = cli("--as", "U03", "outbox", "retry", "--all", "--json")
    assert code == 0 and len(json.loads(out)) == len(letters) - 2
    code, out, _ = cli("outbox", "list", "--json")
    assert json.loads(out) == []
