"""Replay-safe slash commands: a captured signed request sent again inside Slack's signature
window does nothing again, on one replica or several sharing the database; the ack never
waits for the receipt."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptship.clock import ManualClock
from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.services.receipts import CLOCK_MARGIN, RECEIPT_TTL
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy
from tests.helpers import slack
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, ServerThread, sign, wait_for
from tests.test_slack_app import NAME, Bot, texts

ONCALL = slack("U03")


async def test_a_request_is_received_once_until_its_receipt_expires(
    core: Promptship, clock: ManualClock
) -> None:
    first = await core.receive_command("1700000000", "command=%2Fprompt&text=rollback", ONCALL)
    assert first.first and first.received_at == clock.now()
    clock.advance(30)
    again = await core.receive_command("1700000000", "command=%2Fprompt&text=rollback", ONCALL)
    assert not again.first and again.received_at == first.received_at
    # the same text typed again is a new request: a new timestamp, another trigger_id
    assert (
        await core.receive_command("1700000031", "command=%2Fprompt&text=rollback", ONCALL)
    ).first
    clock.advance(RECEIPT_TTL + CLOCK_MARGIN + timedelta(seconds=1))  # Slack refuses it by now
    assert (
        await core.receive_command("1700000000", "command=%2Fprompt&text=rollback", ONCALL)
    ).first


async def test_a_replay_to_a_replica_whose_clock_runs_ahead_is_still_refused(
    core: Promptship, clock: ManualClock
) -> None:
    """Slack signs at T; the first replica's clock reads T-2m when it receives the command,
    a second's reads T+4m when the replay arrives (its signature still valid there)."""
    signed_at = str(int((clock.now() + timedelta(minutes=2)).timestamp()))
    body = "command=%2Fprompt&text=rollback+customer-support+production"
    assert (await core.receive_command(signed_at, body, ONCALL)).first
    clock.advance(timedelta(minutes=6))
    assert not (await core.receive_command(signed_at, body, ONCALL)).first


async def test_replicas_claiming_the_same_request_together_act_once(
    db: Database, core: Promptship, clock: ManualClock
) -> None:
    replicas = [Promptship(db, core.policy, clock) for _ in range(5)]
    receipts = await asyncio.gather(
        *(r.receive_command("1700000000", "text=rollback", ONCALL) for r in replicas)
    )
    assert sorted(r.first for r in receipts) == [False, False, False, False, True]


@pytest.fixture
def double() -> Iterator[SlackDouble]:
    with SlackDouble(token=BOT_TOKEN, usergroups={"S0GROUP": ["U05"]}) as slack:
        yield slack
        assert slack.refused == []


def serve(db_url: str, double: SlackDouble) -> ServerThread:
    settings = Settings(
        PROMPTSHIP_DATABASE_URL=db_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=double.api_url,
    )
    return ServerThread(create_app(settings, make_policy()))


def in_production(bot: Bot, versions: tuple[str, ...]) -> None:
    for version in versions:
        bot.push(version, system_prompt=f"v{version}")
        bot.tested(version)

        async def promote(core: Promptship, v: str = version) -> None:
            await core.request_promotion(NAME, v, "staging", slack("U04"))
            request = await core.request_promotion(NAME, v, "production", slack("U04"))
            await core.approve(request.id, slack("U01"))
            await core.approve(request.id, slack("U02"))

        bot.core(promote)


def rollbacks(bot: Bot) -> list[dict[str, Any]]:
    """The audited production changes that were rollbacks, oldest first."""
    events = bot.core(lambda c: c.history(NAME, "production", limit=100)).events
    return [
        e.details
        for e in reversed(events)
        if e.action == "deployment.changed" and e.details.get("move") == "rollback"
    ]


def post(http: httpx.Client, body: str, headers: dict[str, str]) -> httpx.Response:
    return http.post(
        "/slack/events",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


def test_a_replayed_rollback_is_refused_and_a_new_one_works(
    db_url: str, double: SlackDouble
) -> None:
    with serve(db_url, double) as server:
        bot = Bot(server.url, double, db_url, make_policy())
        in_production(bot, ("1.0.0", "1.1.0", "1.2.0"))
        body, key = bot.slack.command_body("rollback customer-support production", user="U03")
        signed = sign(body)
        assert post(bot.slack.http, body, signed).status_code == 200
        assert "`1.2.0` → `1.1.0`" in texts(bot.reply(key))

        replay = post(bot.slack.http, body, signed)
        assert replay.status_code == 200
        answer = wait_for(lambda: double.responses(key)[1:], what="the replay's answer")[0]
        assert answer["response_type"] == "ephemeral"
        assert "this command was already received at" in answer["text"].lower()
        assert "nothing was done again" in answer["text"]
        assert [r["to"] for r in rollbacks(bot)] == ["1.1.0"]

        _, again = bot.slack.command("rollback customer-support production", user="U03")
        assert "`1.1.0` → `1.0.0`" in texts(bot.reply(again))
        assert [r["to"] for r in rollbacks(bot)] == ["1.1.0", "1.0.0"]
        bot.slack.close()


def test_two_replicas_receiving_the_same_signed_request_act_once(
    db_url: str, double: SlackDouble
) -> None:
    with serve(db_url, double) as one, serve(db_url, double) as two:
        bot = Bot(one.url, double, db_url, make_policy())
        in_production(bot, ("1.0.0", "1.1.0", "1.2.0"))
        body, key = bot.slack.command_body("rollback customer-support production", user="U03")
        signed = sign(body)
        clients = [httpx.Client(base_url=s.url, timeout=10) for s in (one, two)]
        try:
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda c: post(c, body, signed), clients))
        finally:
            for client in clients:
                client.close()
        assert [a.status_code for a in answers] == [200, 200]
        replies = wait_for(
            lambda: r if len(r := double.responses(key)) >= 2 else None, what="both answers"
        )
        assert len([r for r in replies if "already received" in r["text"]]) == 1
        assert len([r for r in replies if "`1.2.0` → `1.1.0`" in texts(r)]) == 1
        assert [r["to"] for r in rollbacks(bot)] == ["1.1.0"]
        bot.slack.close()


def test_a_changing_command_is_acked_while_another_writer_holds_the_database(
    tmp_path: Path, double: SlackDouble
) -> None:
    """A validation worker or the soak scheduler holding SQLite's write lock must not push the
    ack past Slack's 3 s (the user would see operation_timeout and type it again)."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    with serve(db_url, double) as server:
        bot = Bot(server.url, double, db_url, make_policy())
        in_production(bot, ("1.0.0", "1.1.0"))
        writer = sqlite3.connect(tmp_path / "bot.db", timeout=30)
        writer.execute("BEGIN IMMEDIATE")
        try:
            body, key = bot.slack.command_body("rollback customer-support production", user="U03")
            acked = threading.Event()
            answer: list[httpx.Response] = []

            def send() -> None:
                answer.append(post(bot.slack.http, body, sign(body)))
                acked.set()

            sender = threading.Thread(target=send)
            sender.start()
            # acked while the lock is still held: the rollback waits, the ack does not
            assert acked.wait(timeout=10), "the ack waited for the database"
            assert answer[0].status_code == 200
            assert double.responses(key) == []
        finally:
            writer.rollback()
            writer.close()
        sender.join()
        assert "`1.1.0` → `1.0.0`" in texts(bot.reply(key))
        assert [r["to"] for r in rollbacks(bot)] == ["1.0.0"]
        bot.slack.close()
