"""``promptship serve``'s app: migrates on start, reports health and readiness."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from promptship.config import Settings
from promptship.server import create_app
from promptship.store.db import Database


def test_serve_migrates_a_fresh_database_and_is_ready(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    app = create_app(Settings(PROMPTSHIP_DATABASE_URL=url))
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_readyz_reports_missing_migrations(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    app = create_app(Settings(PROMPTSHIP_DATABASE_URL=url), migrate=False)
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["database migrations not applied"]
    db = Database(url)
    assert await db.current_revision() is None
    await db.dispose()
