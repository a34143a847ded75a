"""The console served over HTTP on a free loopback port, with the Slack double answering
Sign in with Slack: for the live-update tests and the browser tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import ServerThread
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy
from tests.helpers import push, slack, to_staging

TEAM = "T0001"
CLIENT_ID = "1000.2000"
CLIENT_SECRET = "oidc-secret-0123"
PROMPT = "customer-support"


class ServedConsole:
    def __init__(self, tmp_path: Path, slack_api: SlackDouble, policy: str = "") -> None:
        self.db_url = f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
        self.slack = slack_api
        settings = Settings(
            PROMPTSHIP_DATABASE_URL=self.db_url,
            SLACK_API_URL=slack_api.api_url,
            SLACK_CLIENT_ID=CLIENT_ID,
            SLACK_CLIENT_SECRET=CLIENT_SECRET,
            PROMPTSHIP_SLACK_TEAM_ID=TEAM,
        )
        self.policy = make_policy(policy)
        self.app = create_app(settings, self.policy, workers=False)
        self.server = ServerThread(self.app)
        self.clients: list[httpx.Client] = []

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ServedConsole:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()
        self.server.__exit__(*exc)

    def run(self, use: Callable[[Promptship], Awaitable[Any]]) -> Any:
        """Act through a facade of our own on the server's database (as the CLI would), in a
        thread of its own: the caller's may hold an event loop already (Playwright's)."""

        async def go() -> Any:
            db = Database(self.db_url)
            try:
                return await use(Promptship(db, self.policy))
            finally:
                await db.dispose()

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    def signed_in(self, user: str = "U0VIEW", **who: Any) -> httpx.Client:
        """An HTTP client that went through /login → Slack's authorize page → /auth/callback."""
        client = httpx.Client(base_url=self.url, follow_redirects=False, timeout=10)
        self.clients.append(client)
        done = self.slack.sign_in(client, user, team=TEAM, **who)
        assert done.status_code == 303, done.text
        return client


def slack_double() -> SlackDouble:
    return SlackDouble(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)


async def two_versions_in_staging(core: Promptship, **kw: Any) -> None:
    """1.0.0 then 1.1.0 promoted to staging: a rollback there goes back to 1.0.0."""
    await push(core, PROMPT, "1.0.0", **kw)
    await to_staging(core, PROMPT, "1.0.0")
    await push(core, PROMPT, "1.1.0", **kw)
    await to_staging(core, PROMPT, "1.1.0")


async def roll_back(core: Promptship) -> None:
    await core.rollback(PROMPT, "staging", slack("U01"), reason="the new wording confuses people")


def events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Server-sent events from a stream's lines: each event's fields, comments under ':'."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
            continue
        field, _, value = line.partition(":")
        event[field] = (event.get(field, "") + "\n" + value.lstrip(" ")).lstrip("\n")
    if event:
        yield event
