"""``GET /about``: a person sees what the server is, whether it is healthy and what runs
where; scripts get the same facts as JSON from ``GET /``. No token needed, no data shown
(people who open ``/`` itself get the console, which needs signing in)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from promptship import __version__
from promptship.config import Settings
from promptship.server import create_app
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy

TOKENS = "write:ci:ci-token-0123456789"
BOT_TOKEN = "xoxb-home-0123456789"
SIGNING_SECRET = "home-signing-secret-0123"


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    with SlackDouble(token=BOT_TOKEN) as double:
        yield double


def test_the_home_page_says_what_runs_where_without_a_token(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'home.db'}"
    app = create_app(Settings(PROMPTSHIP_DATABASE_URL=url, PROMPTSHIP_API_TOKENS=TOKENS))
    with TestClient(app) as client:
        page = client.get("/about", headers={"Accept": "text/html"})
        assert client.get("/metrics").status_code == 401  # data stays behind the tokens
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "<script" not in page.text.lower()
    assert f"promptship <small>{__version__}</small>" in page.text
    assert "ready: the database answers and is migrated, the scheduler runs" in page.text
    assert "Slack: <strong>off</strong>" in page.text
    assert "<code>/v1</code> — HTTP API" in page.text
    for path in ("/v1/openapi.json", "/healthz", "/readyz", "/metrics"):
        assert f'<a href="{path}"><code>{path}</code></a>' in page.text
    assert "README" in page.text


def test_the_home_page_answers_json_with_the_same_facts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'home.db'}"
    with TestClient(create_app(Settings(PROMPTSHIP_DATABASE_URL=url))) as client:
        facts = client.get("/", headers={"Accept": "application/json"}).json()
    assert facts["name"] == "promptship" and facts["version"] == __version__
    assert facts["status"] == "ready" and facts["problems"] == []
    assert facts["slack"] == "off"
    assert facts["endpoints"] == {
        "api": "/v1",
        "openapi": "/v1/openapi.json",
        "healthz": "/healthz",
        "readyz": "/readyz",
        "metrics": "/metrics",
    }


def test_the_home_page_shows_what_keeps_the_server_from_being_ready(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    app = create_app(Settings(PROMPTSHIP_DATABASE_URL=url), migrate=False, workers=False)
    with TestClient(app) as client:
        facts = client.get("/", headers={"Accept": "application/json"}).json()
        page = client.get("/about")
    assert facts["status"] == "unavailable"
    assert facts["problems"] == ["database migrations not applied"]
    assert "not ready: database migrations not applied" in page.text


def test_the_home_page_names_the_slack_mode(tmp_path: Path, slack: SlackDouble) -> None:
    settings = Settings(
        PROMPTSHIP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'home.db'}",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
    )
    with TestClient(create_app(settings, make_policy(), workers=False)) as client:
        facts = client.get("/", headers={"Accept": "application/json"}).json()
        page = client.get("/about")
    assert facts["slack"] == "HTTP" and facts["endpoints"]["slack_events"] == "/slack/events"
    assert "Slack: <strong>HTTP</strong>" in page.text
