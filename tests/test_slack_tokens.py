"""Slack hands people their own tokens (ephemerally), and people listed by e-mail in the
policy's roles hold those roles: the real Bolt app, signed requests, the Slack double."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptship.config import Policy, Settings
from promptship.domain.identity import Actor, Scope, Via
from promptship.server import create_app
from promptship.services import Promptship, tokens
from promptship.services.tokens import TokenIdentity
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, ServerThread, wait_for
from tests.test_slack_app import Bot, texts

SERVER = "https://promptship.acme.test"
EMAIL_POLICY = "roles: {approvers: [Alice@Acme.com, U02, ghost@acme.com], oncall: [U03]}"
DIRECTORY = {"alice@acme.com": "U0ALICE", "bob@acme.com": "U0BOB"}


def serve(tmp_path: Path, policy: Policy, double: SlackDouble) -> Any:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    settings = Settings(
        PROMPTSHIP_DATABASE_URL=db_url,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=double.api_url,
        PROMPTSHIP_PUBLIC_URL=SERVER,
    )
    return db_url, ServerThread(create_app(settings, policy))


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[Bot]:
    policy = make_policy(EMAIL_POLICY)
    with SlackDouble(token=BOT_TOKEN, emails=DIRECTORY) as double:
        db_url, thread = serve(tmp_path, policy, double)
        with thread as server:
            bot = Bot(server.url, double, db_url, policy)
            yield bot
            bot.slack.close()
        assert double.refused == [], "every message the bot sent must pass Slack's limits"


def secret_in(reply: dict[str, Any]) -> str:
    found = re.findall(r"PROMPTSHIP_TOKEN=(psk_[A-Za-z0-9_-]+)", texts(reply))
    assert len(found) == 1, texts(reply)
    return found[0]


def who_is(bot: Bot, secret: str) -> TokenIdentity | None:
    async def go(core: Promptship) -> TokenIdentity | None:
        async with core.db.transaction() as session:
            return await tokens.authenticate(session, core.deps, secret)

    return bot.core(go)  # type: ignore[no-any-return]


def test_a_person_gets_their_own_token_in_an_ephemeral_reply(bot: Bot) -> None:
    _, key = bot.slack.command("token", user="U03")  # on-call: approve by default
    reply = bot.reply(key)
    assert reply["response_type"] == "ephemeral"
    secret = secret_in(reply)
    assert secret not in reply["text"]  # the notification preview never shows it
    assert f"export PROMPTSHIP_SERVER={SERVER}" in texts(reply)
    assert "/prompt token revoke psk_" in texts(reply)
    found = who_is(bot, secret)
    assert found is not None and found.actor() == Actor("U03", Via.TOKEN)
    assert found.scope is Scope.APPROVE

    _, key = bot.slack.command("token", user="U04")  # holds no role: write
    writer = secret_in(bot.reply(key))
    found = who_is(bot, writer)
    assert found is not None and found.subject == "U04" and found.scope is Scope.WRITE
    _, key = bot.slack.command("token read", user="U04")
    found = who_is(bot, secret_in(bot.reply(key)))
    assert found is not None and found.scope is Scope.READ

    # nothing of it reached a channel
    assert all("psk_" not in str(call) for call in bot.double.calls())


def test_admin_and_undeserved_approve_tokens_are_refused(bot: Bot) -> None:
    _, key = bot.slack.command("token admin", user="U02")
    reply = bot.reply(key)
    assert reply["response_type"] == "ephemeral"
    assert "admin tokens are not handed out in Slack" in texts(reply)
    assert "ask for approve or write" in texts(reply)
    _, key = bot.slack.command("token approve", user="U04")
    assert "you hold none of these roles" in texts(bot.reply(key))
    _, key = bot.slack.command("token bogus", user="U04")
    assert "“bogus” is not a token scope" in texts(bot.reply(key))

    async def count(core: Promptship) -> int:
        return len(await core.list_tokens(include_revoked=True))

    assert bot.core(count) == 0


def test_people_revoke_their_own_tokens_and_nobody_elses(bot: Bot) -> None:
    _, key = bot.slack.command("token", user="U04")
    secret = secret_in(bot.reply(key))
    prefix = secret[:12]
    _, key = bot.slack.command(f"token revoke {prefix}", user="U02")
    assert f"no token {prefix} of yours" in texts(bot.reply(key))
    assert who_is(bot, secret) is not None
    _, key = bot.slack.command(f"token revoke {prefix}", user="U04")
    reply = bot.reply(key)
    assert reply["response_type"] == "ephemeral" and "is revoked" in texts(reply)
    assert who_is(bot, secret) is None
    _, key = bot.slack.command(f"token revoke {prefix}", user="U04")
    assert "already revoked by U04" in texts(bot.reply(key))


def test_an_approver_listed_by_email_approves_through_slack(bot: Bot) -> None:
    bot.push()
    bot.tested()
    _, key = bot.slack.command("promote customer-support 1.0.0 staging")
    assert "Promoted" in texts(bot.reply(key))
    _, key = bot.slack.command("promote customer-support 1.0.0 production")
    assert "req-2" in texts(bot.reply(key))

    _, key = bot.slack.command("approve req-2", user="U0BOB")  # in Slack, not in the roles
    assert "only approvers can approve" in texts(bot.reply(key))
    _, key = bot.slack.command("approve req-2 fine by me", user="U0ALICE")
    assert "1/2 approvals" in texts(bot.reply(key))
    _, key = bot.slack.command("approve req-2", user="U02")
    assert "is now in production" in texts(bot.reply(key))

    lookups = [c["email"] for c in bot.double.calls("users.lookupByEmail")]
    # each address looked up once (at start-up), then served from the cache
    assert sorted(lookups) == ["alice@acme.com", "ghost@acme.com"]


def test_an_unknown_email_is_named_at_start_up_and_grants_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = make_policy(EMAIL_POLICY)
    with (
        caplog.at_level(logging.WARNING, logger="promptship.server"),
        SlackDouble(token=BOT_TOKEN, emails=DIRECTORY) as double,
    ):
        _, thread = serve(tmp_path, policy, double)
        with thread:
            line = wait_for(
                lambda: [r.getMessage() for r in caplog.records if "roles:" in r.getMessage()],
                what="the start-up warning about roles",
            )
    assert line == [
        "roles: ghost@acme.com is not a Slack user (users.lookupByEmail: users_not_found)"
    ]


async def test_without_slack_emails_resolve_through_identities(db: Database) -> None:
    policy = make_policy(EMAIL_POLICY + "\nidentities: {alice@acme.com: U0ALICE}")
    core = Promptship(db, policy)
    assert await core.roles.roles_of("U0ALICE") == {"approvers"}
    assert await core.roles.roles_of("U0GHOST") == frozenset()
    assert await core.roles.unresolved_emails() == [
        "ghost@acme.com is not a Slack user (not mapped under identities: in the policy)"
    ]


def test_slack_lookups_are_cached_and_survive_an_outage() -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.directory import SlackGroupDirectory

    async def go(double: SlackDouble) -> None:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=double.api_url)
        clock = [1000.0]
        directory = SlackGroupDirectory(client, email_ttl=600, retry_after=60, now=lambda: clock[0])
        found = await asyncio.gather(*(directory.user_by_email("alice@acme.com") for _ in range(5)))
        assert {f.user for f in found} == {"U0ALICE"}
        assert len(double.calls("users.lookupByEmail")) == 1  # one lookup for the five
        clock[0] += 600
        double.refuse("users.lookupByEmail", "ratelimited")
        kept = await directory.user_by_email("alice@acme.com")  # stale: asks, Slack refuses
        assert kept.user == "U0ALICE"  # the last good answer is kept
        assert (await directory.user_by_email("alice@acme.com")).user == "U0ALICE"
        assert len(double.calls("users.lookupByEmail")) == 2  # no retry storm

        nobody = SlackGroupDirectory(client, retry_after=3600)
        double.refuse("users.lookupByEmail", "ratelimited")
        unknown = await nobody.user_by_email("bob@acme.com")
        assert unknown.user is None and unknown.transient  # fail closed

    with SlackDouble(token=BOT_TOKEN, emails=DIRECTORY) as double:
        asyncio.run(go(double))
