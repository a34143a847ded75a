"""Logs are JSON lines with the request id, and secrets never reach them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from promptship import logs
from promptship.config import Settings
from promptship.server import create_app
from tests.conftest import make_policy

SLACK_TOKEN = "xoxb-1234567890-abcdefghijkl"
API_TOKEN = "write:api-secret-token-123"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.configure([SLACK_TOKEN, "api-secret-token-123", "sk-ant-abcdef123456"], stream=buffer)
    yield buffer
    root.handlers, root.level = saved[0], saved[1]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).propagate = True
    logging.getLogger("apscheduler").setLevel(logging.NOTSET)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_secrets_are_redacted_from_messages_and_tracebacks(captured: io.StringIO) -> None:
    log = logging.getLogger("promptship.test")
    log.warning("calling Slack with %s", SLACK_TOKEN)
    log.warning("header was Authorization: Bearer api-secret-token-123")
    log.warning("a key of another shape: sk-ant-api03-zzzzzzzzzzzz and xapp-1-A0-123456-abcdef")
    log.warning("an API token: psk_AbC12dEfGhIjKlMnOpQrStUvWxYz0123456789-_abc")
    try:
        raise RuntimeError(f"boom with {SLACK_TOKEN}")
    except RuntimeError:
        log.exception("it failed")
    text = captured.getvalue()
    for secret in (SLACK_TOKEN, "api-secret-token-123", "sk-ant-api03", "xapp-1-A0", "IjKlMn"):
        assert secret not in text
    entries = lines(captured)
    assert entries[0]["message"] == "calling Slack with [redacted]"
    assert entries[1]["message"] == "header was Authorization: Bearer [redacted]"
    assert entries[3]["message"] == "an API token: [redacted]"
    assert "RuntimeError: boom with [redacted]" in str(entries[4]["error"])
    assert {e["level"] for e in entries} == {"warning", "error"}


def test_each_request_has_an_id_in_its_logs_and_its_response(
    captured: io.StringIO, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'logs.db'}"
    app = create_app(
        Settings(PROMPTSHIP_DATABASE_URL=url, PROMPTSHIP_API_TOKENS=API_TOKEN),
        make_policy(),
        workers=False,
    )
    with TestClient(app) as client:
        given = client.get(
            "/v1/prompts/nope",
            headers={"X-Request-Id": "trace-42", "Authorization": "Bearer api-secret-token-123"},
        )
        made = client.get("/v1/prompts")
    assert given.status_code == 404 and given.headers["x-request-id"] == "trace-42"
    assert len(made.headers["x-request-id"]) == 16
    access = [e for e in lines(captured) if e["logger"] == "promptship.http"]
    assert {"request_id": "trace-42", "path": "/v1/prompts/nope", "status": 404}.items() <= access[
        0
    ].items()
    assert access[1]["request_id"] == made.headers["x-request-id"]
    assert "api-secret-token-123" not in captured.getvalue()


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_scheduler_ticks_log_only_at_debug(captured: io.StringIO, level: str) -> None:
    from apscheduler.events import EVENT_JOB_EXECUTED
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    logs.configure(stream=captured, level=level)
    executed = asyncio.Event()

    async def tick() -> None:
        pass

    scheduler = AsyncIOScheduler(timezone="UTC")
    # the executor logs "executed successfully" before it tells listeners
    scheduler.add_listener(lambda event: executed.set(), EVENT_JOB_EXECUTED)
    scheduler.add_job(tick, "interval", seconds=3600, next_run_time=datetime.now(UTC))
    scheduler.start()
    try:
        await asyncio.wait_for(executed.wait(), timeout=60)
    finally:
        scheduler.shutdown(wait=False)
    chatter = [line for line in lines(captured) if str(line["logger"]).startswith("apscheduler")]
    if level == "INFO":
        assert chatter == []
    else:
        assert any("executed successfully" in str(line["message"]) for line in chatter)
