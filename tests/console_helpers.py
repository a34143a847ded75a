"""What the console's tests share: a server with Sign in with Slack through the Slack
double, a database to seed through the facade, and the browser's sign-in round trip."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.testclient import TestClient

from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy

TEAM = "T0001"


class Console:
    def __init__(self, tmp_path: Path, slack: SlackDouble, policy: str = "", **env: str) -> None:
        self.db_url = f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
        self.slack = slack
        settings = Settings(
            PROMPTSHIP_DATABASE_URL=self.db_url,
            SLACK_API_URL=slack.api_url,
            SLACK_CLIENT_ID="1000.2000",
            SLACK_CLIENT_SECRET="oidc-secret-0123",
            PROMPTSHIP_SLACK_TEAM_ID=TEAM,
            **env,
        )
        self.policy = make_policy(policy)
        self.app = create_app(settings, self.policy, workers=False)
        self.client = TestClient(self.app, follow_redirects=False)

    def seed(self, use: Any) -> Any:
        async def go() -> Any:
            db = Database(self.db_url)
            try:
                return await use(Promptship(db, self.policy))
            finally:
                await db.dispose()

        return asyncio.run(go())

    def sign_in(self, user: str = "U0VIEW", team: str = TEAM, **who: Any) -> httpx.Response:
        """The browser's round trip: /login → Slack's authorize page → /auth/callback."""
        self.slack.sign_in_as(user, team=team, **who)
        login = self.client.get("/login")
        assert login.status_code == 303, login.text
        back = httpx.get(login.headers["location"], follow_redirects=False)
        assert back.status_code == 302, back.text
        callback = urlsplit(back.headers["location"])
        return self.client.get(f"{callback.path}?{callback.query}")


def between(text: str, start: str, end: str) -> str:
    """The text between the first ``start`` and the ``end`` after it."""
    return text.split(start, 1)[1].split(end, 1)[0]


def rows(html: str, table: str) -> list[str]:
    """The body rows of ``<table class="table">``, each up to its ``</tr>``."""
    body = between(html, f'<table class="{table}">', "</table>")
    return [r.split("</tr>", 1)[0] for r in body.split("<tr")[2:]]
