"""What the console's tests share: a server with Sign in with Slack through the Slack
double, a database to seed through the facade, and the browser's sign-in round trip."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from promptship.clock import ManualClock
from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy
from tests.helpers import REQUESTER, slack, start_staging_soak

TEAM = "T0001"


class Console:
    def __init__(
        self,
        tmp_path: Path,
        slack: SlackDouble,
        policy: str = "",
        db_url: str | None = None,
        **env: str,
    ) -> None:
        self.db_url = db_url or f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
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
        return self.slack.sign_in(self.client, user, team=team, **who)


def between(text: str, start: str, end: str) -> str:
    """The text between the first ``start`` and the ``end`` after it."""
    return text.split(start, 1)[1].split(end, 1)[0]


def rows(html: str, table: str) -> list[str]:
    """The body rows of ``<table class="table">``, each up to its ``</tr>``."""
    body = between(html, f'<table class="{table}">', "</table>")
    return [r.split("</tr>", 1)[0] for r in body.split("<tr")[2:]]


SOAKING = (
    "environments: {production: {approvals: 2, soak: 5s, soak_interval: 1s, max_divergence: 0.1}}"
)


def seed_timed(console: Console, use: Any) -> Any:
    """Seed with promptship's clock under the test's control (soaks wait on it)."""

    async def go() -> Any:
        db = Database(console.db_url)
        try:
            clock = ManualClock(datetime.now(UTC))
            return await use(Promptship(db, console.policy, clock), clock)
        finally:
            await db.dispose()

    return asyncio.run(go())


async def cycle(core: Promptship, soak_id: int, n: int, result: CycleResult) -> str | None:
    assert await core.claim_soak_cycle(soak_id, n, "replica-a", timedelta(seconds=30))
    spec = await core.soak_cycle_spec(soak_id, n)
    return await core.finish_soak_cycle(spec, "replica-a", result)


async def soak_with_baseline(core: Promptship, clock: ManualClock) -> int:
    """1.0.0 soaked into production, then 1.1.0 soaking in staging against it."""
    first = await start_staging_soak(core, "customer-support", "1.0.0")
    for n in range(1, 6):
        clock.advance(timedelta(seconds=1))
        await cycle(core, first, n, CycleResult(sample_size=40, divergent=1))
    clock.advance(timedelta(seconds=1))
    request = await core.request_promotion(
        "customer-support", "1.0.0", "production", slack(REQUESTER)
    )
    await core.approve(request.id, slack("U01"))
    assert (await core.approve(request.id, slack("U02"))).request.state == "promoted"
    return await start_staging_soak(core, "customer-support", "1.1.0")
