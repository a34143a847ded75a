"""The HTTP API, served for real over loopback: token scopes, pushing from CI, problem
documents, the runtime endpoint's ETag and long-poll, and a schemathesis run against the
OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import ServerThread
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import REQUESTER, case_results, slack

NAME = "customer-support"
APP, CI, ROOT = "app-token-0123456789", "ci-token-0123456789", "root-token-0123456789"
TOKENS = f"read:app:{APP},write:ci:{CI},admin:root:{ROOT}"
READ, WRITE = {"Authorization": f"Bearer {APP}"}, {"Authorization": f"Bearer {CI}"}


class Api:
    def __init__(self, url: str, db_url: str) -> None:
        self.url = url
        self.db_url = db_url
        self.http = httpx.Client(base_url=url, timeout=60)

    def core(self, use: Any) -> Any:
        async def go() -> Any:
            db = Database(self.db_url)
            try:
                return await use(Promptship(db, make_policy()))
            finally:
                await db.dispose()

        return asyncio.run(go())

    def push(self, version: str = "1.0.0", **kw: Any) -> httpx.Response:
        return self.http.post(
            "/v1/prompts",
            content=prompt_yaml(NAME, version, **kw),
            headers={**WRITE, "Content-Type": "application/yaml"},
        )

    def to_production(self, version: str) -> None:
        async def go(core: Promptship) -> None:
            await core.record_validation_run(NAME, version, case_results(10), slack(REQUESTER))
            await core.request_promotion(NAME, version, "staging", slack(REQUESTER))
            request = await core.request_promotion(NAME, version, "production", slack(REQUESTER))
            await core.approve(request.id, slack("U01"))
            await core.approve(request.id, slack("U02"))

        self.core(go)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    (tmp_path / "promptship.yaml").write_text("")
    app = create_app(
        Settings(PROMPTSHIP_DATABASE_URL=db_url, PROMPTSHIP_API_TOKENS=TOKENS),
        make_policy(),
        workers=False,
    )
    with ServerThread(app) as server:
        client = Api(server.url, db_url)
        yield client
        client.http.close()


def test_scopes_decide_who_may_read_and_write(api: Api) -> None:
    assert api.http.get("/v1/prompts").status_code == 401
    assert api.http.get("/v1/prompts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.http.get("/v1/prompts", headers=READ).json() == []
    refused = api.http.post("/v1/prompts", content=prompt_yaml(), headers={**READ})
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "this token's scope is read; this needs push (scopes: write, approve, admin)"
    )
    assert refused.headers["content-type"] == "application/problem+json"
    admin = api.http.post(
        "/v1/prompts?author=U09",
        content=prompt_yaml(),
        headers={"Authorization": f"Bearer {ROOT}"},
    )
    assert admin.status_code == 201


def test_push_from_ci_is_idempotent_and_refuses_changed_content(api: Api) -> None:
    first = api.push()
    assert first.status_code == 201 and first.json()["status"] == "draft"
    assert api.push().status_code == 200
    changed = api.push(system_prompt="Something else.")
    assert changed.status_code == 409
    assert "already registered with other content" in changed.json()["detail"]
    bad = api.http.post(
        "/v1/prompts",
        content="name: x\nversion: 2.1\n",
        headers={**WRITE, "Content-Type": "application/yaml"},
    )
    assert bad.status_code == 400
    assert "request body: version: write the version as text in quotes" in bad.json()["detail"]
    as_json = api.http.post(
        "/v1/prompts",
        json={"name": "other", "version": "1.0.0", "model": "m", "system_prompt": "Hi."},
        headers={**WRITE, "X-Promptship-User": "ci"},  # naming yourself is fine
    )
    assert as_json.status_code == 201


def test_reads_and_promotion_requests(api: Api) -> None:
    api.push("1.0.0")
    api.push("1.1.0", system_prompt="Be brief.")
    assert [
        v["version"] for v in api.http.get(f"/v1/prompts/{NAME}/versions", headers=READ).json()
    ] == [
        "1.0.0",
        "1.1.0",
    ]
    diff = api.http.get(f"/v1/prompts/{NAME}/diff?from=1.0.0&to=1.1.0", headers=READ).json()
    assert "Be brief." in diff["system_prompt_diff"]
    history = api.http.get(f"/v1/prompts/{NAME}/history?limit=1", headers=READ).json()
    assert len(history["events"]) == 1 and history["next_before"]
    missing = api.http.get("/v1/prompts/nope", headers=READ)
    assert missing.status_code == 404 and "no prompt named 'nope'" in missing.json()["detail"]
    api.core(lambda c: c.record_validation_run(NAME, "1.0.0", case_results(10), slack(REQUESTER)))
    request = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.0.0", "environment": "staging"},
        headers=WRITE,
    )
    assert request.status_code == 201 and request.json()["state"] == "promoted"
    skip = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.1.0", "environment": "production"},
        headers=WRITE,
    )
    assert skip.status_code == 409 and "1.1.0 is draft" in skip.json()["detail"]


def test_the_runtime_endpoint_answers_with_an_etag_and_304(api: Api) -> None:
    api.push("1.0.0")
    nothing = api.http.get(f"/v1/prompts/{NAME}/environments/production", headers=READ)
    assert nothing.status_code == 404 and "nothing in production" in nothing.json()["detail"]
    api.to_production("1.0.0")
    live = api.http.get(f"/v1/prompts/{NAME}/environments/production", headers=READ)
    assert live.status_code == 200
    body = live.json()
    assert (body["version"], body["system_prompt"]) == ("1.0.0", "You are a helpful support agent.")
    assert (body["variables"], body["messages"]) == ({}, [])  # not a template
    etag = live.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    same = api.http.get(
        f"/v1/prompts/{NAME}/environments/production",
        headers={**READ, "If-None-Match": etag},
    )
    assert same.status_code == 304 and same.headers["etag"] == etag and same.content == b""


def test_a_long_poll_wakes_on_promotion_and_on_rollback(api: Api) -> None:
    api.push("1.0.0")
    api.to_production("1.0.0")
    api.push("1.1.0", system_prompt="Be brief.")
    url = f"/v1/prompts/{NAME}/environments/production"
    etag = api.http.get(url, headers=READ).headers["etag"]

    def poll(tag: str) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = api.http.get(f"{url}?wait=20", headers={**READ, "If-None-Match": tag})
        return response, time.monotonic() - started

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waiting = loop.run_in_executor(None, poll, etag)
        await asyncio.sleep(0.5)
        changed_at = time.monotonic()
        await loop.run_in_executor(None, api.to_production, "1.1.0")
        response, _ = await waiting
        assert response.status_code == 200 and response.json()["version"] == "1.1.0"
        assert time.monotonic() - changed_at < 2.0

        waiting = loop.run_in_executor(None, poll, response.headers["etag"])
        await asyncio.sleep(0.5)
        changed_at = time.monotonic()
        await loop.run_in_executor(
            None, api.core, lambda c: c.rollback(NAME, "production", slack("U03"))
        )
        rolled, _ = await waiting
        assert rolled.status_code == 200 and rolled.json()["version"] == "1.0.0"
        assert time.monotonic() - changed_at < 2.0

    asyncio.run(scenario())
    quiet = api.http.get(
        f"{url}?wait=0.5",
        headers={**READ, "If-None-Match": api.http.get(url, headers=READ).headers["etag"]},
    )
    assert quiet.status_code == 304  # nothing moved: 304 at the timeout


def test_bad_query_values_are_problems_not_errors(api: Api) -> None:
    api.push("1.0.0")
    api.to_production("1.0.0")
    for path in (
        f"/v1/prompts/{NAME}/environments/production?wait=soon",
        f"/v1/prompts/{NAME}/history?limit=-1",
        f"/v1/prompts/{NAME}/diff?from=1.0.0",
        f"/v1/prompts/{NAME}/environments/prod",
    ):
        response = api.http.get(path, headers=READ)
        assert response.status_code == 400, path
        assert response.headers["content-type"] == "application/problem+json"


def test_the_openapi_document_describes_the_api(api: Api) -> None:
    document = api.http.get("/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/prompts/{name}/environments/{environment}" in document["paths"]
    runtime = document["components"]["schemas"]["RuntimePrompt"]
    assert {"system_prompt", "variables", "messages"} <= set(runtime["required"])
    turn = document["components"]["schemas"]["PromptMessage"]["properties"]["role"]
    assert turn["enum"] == ["user", "assistant"]
    traffic = document["paths"]["/v1/traffic"]["post"]["requestBody"]["content"]
    sample = traffic["application/json"]["schema"]["items"]
    assert sample["properties"]["vars"]["type"] == "object"


def test_no_input_makes_a_500_or_breaks_the_schema(api: Api) -> None:
    """schemathesis: every operation of the OpenAPI document, bounded examples each."""
    api.push("1.0.0")
    api.to_production("1.0.0")
    schema = schemathesis.openapi.from_url(f"{api.url}/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 22
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ROOT}"},
                # schema-valid text need not be a valid prompt file or an existing name:
                # those get 400/404 problem documents, which the other checks verify
                excluded_checks=[positive_data_acceptance],
            )

        check()


# -- the client library ------------------------------------------------------------------


def wait_until(predicate: Any, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


def test_the_client_follows_promotions_and_rollbacks_without_a_ttl(api: Api) -> None:
    from promptship.client import PromptClient

    api.push("1.0.0")
    api.to_production("1.0.0")
    api.push("1.1.0", system_prompt="Be brief.")
    with PromptClient(api.url, APP, ttl=3600, wait=2) as client:
        assert client.get(NAME, "production").version == "1.0.0"
        api.to_production("1.1.0")
        took = wait_until(lambda: client.get(NAME, "production").version == "1.1.0")
        assert took < 2.0
        api.core(lambda c: c.rollback(NAME, "production", slack("U03")))
        took = wait_until(lambda: client.get_system_prompt(NAME, "production").startswith("You"))
        assert took < 2.0 and client.get(NAME, "production").version == "1.0.0"


def test_the_client_serves_the_last_good_prompt_while_the_server_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from promptship.client import PromptClient, PromptUnavailable

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'down.db'}"
    app = create_app(
        Settings(PROMPTSHIP_DATABASE_URL=db_url, PROMPTSHIP_API_TOKENS=TOKENS),
        make_policy(),
        workers=False,
    )
    server = ServerThread(app).__enter__()
    api = Api(server.url, db_url)
    api.push("1.0.0")
    api.to_production("1.0.0")
    client = PromptClient(server.url, APP, ttl=0.2, wait=1)
    try:
        assert client.get(NAME, "production").version == "1.0.0"
        server.__exit__(None, None, None)  # the server goes away
        time.sleep(0.5)  # past the TTL, and the watch has failed
        with caplog.at_level("WARNING", logger="promptship.client"):
            stale = client.get(NAME, "production")
        assert stale.version == "1.0.0" and stale.system_prompt.startswith("You are")
        assert "serving customer-support 1.0.0" in caplog.text
        with pytest.raises(PromptUnavailable, match="sql-assistant in production"):
            client.get("sql-assistant", "production")
    finally:
        client.close()
        api.http.close()


def test_log_traffic_never_blocks_and_arrives_in_batches(api: Api) -> None:
    from promptship.client import PromptClient

    api.push("1.0.0")
    with PromptClient(api.url, CI, flush_interval=0.2) as client:
        started = time.perf_counter()
        for i in range(1500):
            client.log_traffic(NAME, "production", f"question {i}", f"answer {i}", "1.0.0")
        assert time.perf_counter() - started < 1.0  # queued, not sent inline

        async def stored(core: Promptship) -> int:
            from sqlalchemy import func, select

            from promptship.store.models import TrafficSample

            async with core.db.reader() as session:
                return int(
                    await session.scalar(select(func.count()).select_from(TrafficSample)) or 0
                )

        wait_until(lambda: api.core(stored) == 1500)
    assert client.dropped == 0


async def test_the_async_client_does_the_same(api: Api) -> None:
    from promptship.client import AsyncPromptClient

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, api.push, "1.0.0")
    await loop.run_in_executor(None, api.to_production, "1.0.0")
    await loop.run_in_executor(None, lambda: api.push("1.1.0", system_prompt="Be brief."))
    async with AsyncPromptClient(api.url, CI, ttl=3600, wait=2) as client:
        assert (await client.get(NAME, "production")).version == "1.0.0"
        await loop.run_in_executor(None, api.to_production, "1.1.0")
        async with asyncio.timeout(3):
            while (await client.get(NAME, "production")).version != "1.1.0":
                await asyncio.sleep(0.02)
        client.log_traffic(NAME, "production", "hello", "hi", "1.1.0")
    assert client.dropped == 0


def test_ci_pushes_through_the_api_with_the_cli(api: Api) -> None:
    from typer.testing import CliRunner

    from promptship.cli import app
    from promptship.cli.common import state

    examples = str(Path(__file__).parent.parent / "examples" / "prompts")
    try:
        first = CliRunner().invoke(
            app,
            ["--as", "ci", "push", examples, "--server", api.url, "--token", CI],
        )
        assert first.exit_code == 0, first.output
        assert "registered customer-support 2.1.0" in first.stdout
        again = CliRunner().invoke(
            app, ["--as", "ci", "push", examples, "--server", api.url, "--token", CI]
        )
        assert again.exit_code == 0 and "unchanged customer-support 2.1.0" in again.stdout
        refused = CliRunner().invoke(
            app, ["--as", "ci", "push", examples, "--server", api.url, "--token", APP]
        )
        assert refused.exit_code == 1  # refused, as a local Forbidden is
        assert "--as ci is ignored: the server knows you from your token as app" in refused.stderr
        assert "the server refused it (403): this token's scope is read" in refused.stderr
    finally:
        state.actor = None
    versions = api.http.get(f"/v1/prompts/{NAME}/versions", headers=READ).json()
    assert [v["version"] for v in versions] == ["2.1.0"]


def test_ci_checks_the_deployment_file_against_the_server(api: Api, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from promptship.cli import app

    api.push("1.0.0")
    api.to_production("1.0.0")
    target = tmp_path / "deployment.yaml"
    args = ["--server", api.url, "--token", APP]
    written = CliRunner().invoke(app, ["export", str(target), *args])
    assert written.exit_code == 0, written.output
    same = CliRunner().invoke(app, ["export", str(target), "--check", *args])
    assert same.exit_code == 0 and "matches the live state" in same.stdout
    api.push("1.1.0", system_prompt="Be brief.")
    api.to_production("1.1.0")
    moved = CliRunner().invoke(app, ["export", str(target), "--check", *args])
    assert moved.exit_code == 1
    assert (
        "customer-support production: prompt_version is '1.1.0' live, '1.0.0' in the file"
        in moved.stderr
    )


def test_metrics_parse_and_count_what_happened(api: Api) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    api.push("1.0.0")
    api.to_production("1.0.0")
    response = api.http.get("/metrics", headers=READ)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    promotions = {
        (s.labels["environment"], s.labels["kind"]): s.value
        for s in families["promptship_promotions"].samples
    }
    assert promotions == {("staging", "normal"): 1.0, ("production", "normal"): 1.0}
    approvals = families["promptship_time_to_approve_seconds"].samples
    assert [s.value for s in approvals if s.name.endswith("_count")] == [2.0]
    rates = families["promptship_validation_pass_rate"].samples
    assert [(s.labels["version"], s.value) for s in rates] == [("1.0.0", 1.0)]
    assert families["promptship_outbox_backlog"].samples[0].value >= 1
    assert "promptship_slack_ack_seconds" in families
