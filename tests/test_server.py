"""``promptship serve``'s app: migrates on start, reports health and readiness."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from slack_sdk.web.async_client import AsyncWebClient
from starlette.testclient import TestClient

from promptship.auditkeys import generate_key
from promptship.config import Settings
from promptship.domain.promptfile import parse_prompt
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import ServerThread
from tests.conftest import prompt_yaml
from tests.helpers import slack


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


def test_traffic_ingest_needs_a_token_and_answers_problems(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    settings = Settings(
        PROMPTSHIP_DATABASE_URL=url, PROMPTSHIP_API_TOKENS=f"{CI_SECRET}, {APP_SECRET}"
    )
    app = create_app(settings, workers=False)
    sample = {"prompt": "customer-support", "environment": "production", "input": "hi"}
    with TestClient(app) as client:
        core = app.state.core
        client.portal.call(push_example, core)  # type: ignore[union-attr]

        missing = client.post("/v1/traffic", json=[sample])
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/traffic", json=[sample], headers=bearer("nope"))
        assert wrong.status_code == 401 and "not known" in wrong.json()["detail"]

        stored = client.post(
            "/v1/traffic", json={"samples": [sample] * 3}, headers=bearer(APP_SECRET)
        )
        assert stored.status_code == 201 and stored.json() == {"stored": 3, "pruned": 0}

        bad = client.post(
            "/v1/traffic", json=[{**sample, "input": "x" * 40_000}], headers=bearer(CI_SECRET)
        )
        assert bad.status_code == 400
        assert "input is 40,000 characters" in bad.json()["detail"]
        assert bad.json()["type"] == "urn:promptship:bad-input"
        unknown = client.post(
            "/v1/traffic", json=[{**sample, "prompt": "nope"}], headers=bearer(CI_SECRET)
        )
        assert unknown.status_code == 404
        garbage = client.post("/v1/traffic", content=b"{oops", headers={**bearer(CI_SECRET)})
        assert garbage.status_code == 400 and garbage.json()["title"] == "Bad JSON"
        shape = client.post("/v1/traffic", json={"sample": []}, headers=bearer(CI_SECRET))
        assert shape.status_code == 400


def test_a_hostile_traffic_body_is_refused_without_stalling_other_requests(
    tmp_path: Path,
) -> None:
    """8 MiB of nested arrays once held the event loop for seconds while being parsed: every
    other request (Slack's acks among them) waited. It is refused before parsing now, and a
    large valid batch parses off the loop."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    settings = Settings(PROMPTSHIP_DATABASE_URL=url, PROMPTSHIP_API_TOKENS=APP_SECRET)
    hostile = ("[" + ",".join(["[[[[[[[[[[]]]]]]]]]]"] * (8 * 2**20 // 21 - 10)) + "]").encode()
    sample = {"prompt": "customer-support", "environment": "production"}
    # 1,000 samples of long inputs: near the body limit, a few thousand items
    large = json.dumps([{**sample, "input": f"question {i} " + "x" * 6000} for i in range(1000)])
    with ServerThread(create_app(settings, workers=False)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert client.get("/healthz").status_code == 200
            refusals: list[httpx.Response] = []

            def send(body: bytes | str) -> None:
                with httpx.Client(base_url=server.url, timeout=60) as sender:
                    refusals.append(
                        sender.post("/v1/traffic", content=body, headers=bearer(APP_SECRET))
                    )

            senders = [threading.Thread(target=send, args=(b,)) for b in (hostile, large)]
            for sender in senders:
                sender.start()
            slowest = 0.0
            while any(sender.is_alive() for sender in senders):  # meanwhile, others are served
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
            for sender in senders:
                sender.join()
    assert slowest < 2.5, f"/healthz waited {slowest:.1f} s behind the traffic bodies"
    refused = [r for r in refusals if r.status_code == 400 and r.json()["title"] == "Bad body"]
    assert len(refused) == 1
    assert "send it in smaller batches" in refused[0].json()["detail"]
    # the large valid batch was parsed and checked (its prompt does not exist here)
    assert sorted(r.status_code for r in refusals) == [400, 404]


def test_an_unexpected_server_error_is_a_plain_answer_not_a_bare_500(tmp_path: Path) -> None:
    database = tmp_path / "api.db"
    app = create_app(Settings(PROMPTSHIP_DATABASE_URL=f"sqlite+aiosqlite:///{database}"))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/prompts").status_code == 200
        with sqlite3.connect(database) as broken:  # what no request can repair
            broken.execute("ALTER TABLE prompts RENAME TO prompts_gone")
        failed = client.get("/v1/prompts")
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert failed.json()["title"] == "Internal error"
        assert "the error was logged" in failed.json()["detail"]
        assert "Traceback" not in failed.text and "prompts_gone" not in failed.text


def test_without_tokens_writes_are_off(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    with TestClient(create_app(Settings(PROMPTSHIP_DATABASE_URL=url), workers=False)) as client:
        refused = client.post("/v1/traffic", json=[], headers=bearer("anything"))
    assert refused.status_code == 403 and "PROMPTSHIP_API_TOKENS" in refused.json()["detail"]


CI_SECRET, APP_SECRET = "ci-secret-0123456789", "app-secret-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def push_example(core: Promptship) -> None:
    await core.push(parse_prompt(prompt_yaml()), slack("U09"))


def test_a_second_server_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    database = tmp_path / "one.db"
    url = f"sqlite+aiosqlite:///{database}"
    refusal = (
        f"SQLite mode is single-process: another promptship serve (pid {os.getpid()}) uses "
        f"{database}; run several replicas on PostgreSQL (PROMPTSHIP_DATABASE_URL=postgresql"
    )
    with TestClient(create_app(Settings(PROMPTSHIP_DATABASE_URL=url))):
        assert (tmp_path / "one.db.serve.lock").read_text() == f"pid {os.getpid()}"
        # `promptship serve` says so in one line and exits 2 before it binds a port
        done = subprocess.run(
            [sys.executable, "-m", "promptship.cli", "serve", "--port", "0"],
            env=cli_env(url),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert refusal in done.stderr
        assert "Traceback" not in done.stderr and "Uvicorn running" not in done.stderr
    # the first one stopped: another process may take the lock now
    take = (
        "from promptship.single_process import SingleProcessLock; "
        f"SingleProcessLock({str(database)!r}).acquire()"
    )
    taken = subprocess.run(
        [sys.executable, "-c", take], env=cli_env(url), capture_output=True, text=True, timeout=120
    )
    assert taken.returncode == 0, taken.stderr


def test_ctrl_c_during_start_up_ends_serve_without_a_traceback(tmp_path: Path) -> None:
    lock = tmp_path / "fresh.db.serve.lock"
    server = subprocess.Popen(
        [sys.executable, "-m", "promptship.cli", "serve", "--port", "0"],
        env=cli_env(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the lock is taken as serve starts, before it migrates the fresh database
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text() == f"pid {server.pid}"):
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "serve did not start within 120 s"
            time.sleep(0.01)
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr


def cli_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PROMPTSHIP_DATABASE_URL": url,
        "PROMPTSHIP_AUDIT_KEY": generate_key(),
    }


def test_a_run_cut_short_by_shutdown_is_handed_back_and_the_next_server_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time

    from promptship.services import Promptship as Core
    from promptship.testing.model_double import ModelDouble

    url = f"sqlite+aiosqlite:///{tmp_path / 'stop.db'}"

    async def run_state(run_id: int) -> str:
        db = Database(url)
        try:
            return (await Core(db).validation_run(run_id)).state
        finally:
            await db.dispose()

    # the model does not answer before the shutdown, however slow the machine
    with ModelDouble(latency=600.0) as model:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", model.url)
        app = create_app(Settings(PROMPTSHIP_DATABASE_URL=url))
        with TestClient(app) as client:
            core = app.state.core

            async def queue() -> int:
                await core.push(parse_prompt(prompt_yaml()), slack("U09"))
                return (
                    await core.queue_validation_run("customer-support", "1.0.0", slack("U04"))
                ).id

            run_id = client.portal.call(queue)  # type: ignore[union-attr]
            deadline = time.monotonic() + 20
            while model.request_count == 0:  # the worker claimed it and is calling the model
                assert time.monotonic() < deadline
                time.sleep(0.05)

        # the server stopped mid-run: the run waits in the queue for the next worker
        assert asyncio.run(run_state(run_id)) == "queued"
        model.latency = 0.0
        restarted = create_app(Settings(PROMPTSHIP_DATABASE_URL=url))
        with TestClient(restarted):
            deadline = time.monotonic() + 60
            while asyncio.run(run_state(run_id)) in ("queued", "running"):
                assert time.monotonic() < deadline, "the restarted server never ran it"
                time.sleep(0.1)
        assert asyncio.run(run_state(run_id)) in ("passed", "failed")


async def test_in_socket_mode_slack_events_is_not_served_over_http(
    core: Promptship, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Socket Mode has no signing secret: a POST to /slack/events signed with an empty key
    would otherwise act as any Slack user, and its error reply go where the caller chose."""
    import httpx
    from slack_bolt.request.async_request import AsyncBoltRequest

    from bot.app import build_app
    from promptship.testing.slack_double import SlackDouble
    from tests.conftest import make_policy
    from tests.helpers import REQUESTER, push, to_staging
    from tests.slack_helpers import BOT_TOKEN, SlackClient, sign

    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    await push(core)
    await to_staging(core)
    request = await core.request_promotion(
        "customer-support", "1.0.0", "production", slack(REQUESTER)
    )
    with SlackDouble(token=BOT_TOKEN) as double:
        settings = Settings(
            PROMPTSHIP_DATABASE_URL=database_url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN="xapp-1-socket",
            SLACK_API_URL=double.api_url,
        )
        app = create_app(settings, make_policy(), migrate=False, workers=False)
        forger = SlackClient("http://unused", double)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for user in ("U01", "U02"):
                body, key = forger.command_body(f"approve req-{request.id}", user=user)
                headers = {"Content-Type": "application/x-www-form-urlencoded"}
                answer = await http.post(
                    "/slack/events", content=body, headers={**headers, **sign(body, secret="")}
                )
                assert answer.status_code == 404
                assert double.responses(key) == []
        assert (await core.request(request.id)).decisions == []

        # Bolt itself, handed such a request: no reply reaches the caller's response_url
        bolt = build_app(settings, core, AsyncWebClient(token=BOT_TOKEN, base_url=double.api_url))
        body, key = forger.command_body("approve req-999999", user="U01")
        await bolt.async_dispatch(AsyncBoltRequest(body=body, headers=sign(body, secret="")))
        assert double.responses(key) == []
