"""Templates end to end, as a team and its app meet them: a templated prompt pushed through
the API, its suite run against the model double with each case's vars, promoted through a
soak, served by the runtime API as a template with its variables and messages, rendered by
both clients, its traffic logged with vars (API, clients, JSONL), and a soak cycle that
renders both versions with each sample's vars. Real store, real MiniLM; time is a
ManualClock wherever the services decide by it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from promptship.client import (
    AsyncPromptClient,
    MissingVariable,
    Prompt,
    PromptClient,
    Rendered,
)
from promptship.clock import ManualClock
from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.soak.cycle import run_cycle
from promptship.store.db import Database
from promptship.testing.model_double import ModelDouble
from promptship.testing.serve import ServerThread
from promptship.validation.runner import RunnerSettings, SuiteRunner
from promptship.validation.scoring import Scorer
from tests.conftest import TEST_POLICY, make_policy, prompt_yaml
from tests.helpers import REQUESTER, slack, to_staging

NAME, CHAT = "customer-support", "sales-chat"
APP, CI = "app-token-0123456789", "ci-token-0123456789"
TOKENS = f"runtime:app:{APP},write:ci:{CI}"
APP_AUTH, CI_AUTH = {"Authorization": f"Bearer {APP}"}, {"Authorization": f"Bearer {CI}"}
#: two one-second soak cycles; three logged queries are enough traffic
POLICY = """
environments:
  production: {approvals: 2, soak: 2s, soak_interval: 1s, soak_sample: 50, soak_min_samples: 3}
"""
LEASE = timedelta(seconds=30)
VARIABLES = {"customer_name": None, "plan": "free"}
V1 = "You are helping {{ customer_name }} on the {{ plan }} plan."
V2 = "You assist {{ customer_name }} ({{ plan }} plan). Be brief."
CASES = [
    {
        "input": "How do I upgrade?",
        "expected": "upgrade",
        "type": "icontains",
        "vars": {"customer_name": "Ada", "plan": "pro"},
    },
    {
        "input": "Where is my invoice?",
        "expected": "invoice",
        "type": "icontains",
        "vars": {"customer_name": "Grace"},  # plan: its default
    },
]


def v1(name: str, plan: str = "free") -> str:
    return f"You are helping {name} on the {plan} plan."


def v2(name: str, plan: str = "free") -> str:
    return f"You assist {name} ({plan} plan). Be brief."


class Server:
    def __init__(self, url: str, db_url: str) -> None:
        self.url, self.db_url = url, db_url
        self.http = httpx.Client(base_url=url, timeout=60)

    def push(self, body: str) -> httpx.Response:
        return self.http.post(
            "/v1/prompts", content=body, headers={**CI_AUTH, "Content-Type": "application/yaml"}
        )

    def runtime(self, name: str, environment: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/prompts/{name}/environments/{environment}", headers=APP_AUTH)
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'templates.db'}"
    app = create_app(
        Settings(PROMPTSHIP_DATABASE_URL=db_url, PROMPTSHIP_API_TOKENS=TOKENS),
        make_policy(POLICY),
        workers=False,
    )
    with ServerThread(app) as served:
        running = Server(served.url, db_url)
        yield running
        running.http.close()


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelDouble]:
    with ModelDouble() as double:  # answers "Answer: <the user's message>"
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", double.url)
        yield double


def received(model: ModelDouble) -> list[tuple[str, str]]:
    """(system, user) of every call the double answered, sorted."""
    return sorted((r["system"], r["user"]) for r in model.requests)


async def soak_cycle(core: Promptship, scorer: Scorer, version: str, cycle: int) -> Any:
    """Run cycle ``cycle`` of ``version``'s staging soak for real; its samples and result."""
    clock = core.clock
    assert isinstance(clock, ManualClock)
    clock.advance(timedelta(seconds=1))
    soak_id = await core.staging_soak_id(NAME, version)
    assert soak_id is not None
    assert await core.claim_soak_cycle(soak_id, cycle, "r1", LEASE)
    spec = await core.soak_cycle_spec(soak_id, cycle)
    result = await run_cycle(spec, scorer, pages=core.soak_sample_pages)
    assert await core.finish_soak_cycle(spec, "r1", result) == "passed", result
    samples = [s async for page in core.soak_sample_pages(spec) for s in page]
    return samples, result


async def test_a_templated_prompt_from_push_to_soak_to_the_app(
    server: Server, model: ModelDouble, scorer: Scorer
) -> None:
    db = Database(server.db_url)
    core = Promptship(db, make_policy(POLICY), ManualClock(datetime.now(UTC)))
    try:
        await _scenario(server, core, model, scorer)
    finally:
        await db.dispose()


async def _scenario(server: Server, core: Promptship, model: ModelDouble, scorer: Scorer) -> None:
    # push through the API, as CI does
    pushed = server.push(
        prompt_yaml(NAME, "1.0.0", system_prompt=V1, variables=VARIABLES, tests=CASES)
    )
    assert pushed.status_code == 201, pushed.text

    # the validation run sends each case its own rendering
    request = await core.request_promotion(
        NAME, "1.0.0", "staging", slack(REQUESTER), queue_tests=True
    )
    async with SuiteRunner(core, settings=RunnerSettings(timeout=5, max_retries=3)) as runner:
        run_id = await core.claim_validation_run(runner.owner)
        assert run_id is not None
        run = await runner.execute(run_id)
        assert (run.state, run.passed) == ("passed", 2)
    expected_cases = sorted(
        [(v1("Ada", "pro"), "How do I upgrade?"), (v1("Grace"), "Where is my invoice?")]
    )
    assert received(model) == expected_cases
    assert (await core.request(request.id)).state == "promoted"

    # with nothing in production, the staging soak replays the suite, each case's vars too
    model.reset()
    for cycle in (1, 2):
        await soak_cycle(core, scorer, "1.0.0", cycle)
    assert received(model) == sorted(expected_cases * 2)
    production = await core.request_promotion(NAME, "1.0.0", "production", slack(REQUESTER))
    await core.approve(production.id, slack("U01"))
    assert (await core.approve(production.id, slack("U02"))).request.state == "promoted"

    # the app logs its queries with the vars it rendered with: API, sync and async clients
    logged = server.http.post(
        "/v1/traffic",
        json=[
            {
                "prompt": NAME,
                "environment": "production",
                "input": "Can I pay yearly?",
                "vars": {"customer_name": "Ada", "plan": "pro"},
            }
        ],
        headers=APP_AUTH,
    )
    assert logged.status_code == 201, logged.text
    refused = server.http.post(
        "/v1/traffic",
        json=[
            {"prompt": NAME, "environment": "production", "input": "x"},
            {"prompt": NAME, "environment": "production", "input": "y", "vars": {"a-b": 1}},
        ],
        headers=APP_AUTH,
    )
    assert refused.status_code == 400
    assert "sample 2: vars: 'a-b' is not a variable name" in refused.json()["detail"]
    with PromptClient(server.url, APP, flush_interval=60) as client:
        client.log_traffic(
            NAME, "production", "Where is my invoice?", vars={"customer_name": "Grace"}
        )
        client.flush()
    async with AsyncPromptClient(server.url, APP, flush_interval=60) as aclient:
        aclient.log_traffic(
            NAME,
            "production",
            "How do I cancel?",
            version="1.0.0",
            vars={"customer_name": "Linus", "plan": "team", "locale": "fi"},  # a superset
        )
        await aclient.flush()
    assert client.dropped == aclient.dropped == 0

    # 1.1.0 enters staging: its soak renders both versions with each sample's vars
    to_push = prompt_yaml(NAME, "1.1.0", system_prompt=V2, variables=VARIABLES, tests=CASES)
    assert server.push(to_push).status_code == 201
    await to_staging(core, NAME, "1.1.0")
    model.reset()
    samples, result = await soak_cycle(core, scorer, "1.1.0", 1)
    assert sorted((s.input, json.dumps(s.vars, sort_keys=True)) for s in samples) == [
        ("Can I pay yearly?", '{"customer_name": "Ada", "plan": "pro"}'),
        ("How do I cancel?", '{"customer_name": "Linus", "locale": "fi", "plan": "team"}'),
        ("Where is my invoice?", '{"customer_name": "Grace"}'),
    ]
    assert (result.sample_size, result.model_calls, result.errored) == (3, 6, 0)
    assert received(model) == sorted(
        (render(name, plan), question)
        for render in (v1, v2)
        for name, plan, question in [
            ("Ada", "pro", "Can I pay yearly?"),
            ("Grace", "free", "Where is my invoice?"),
            ("Linus", "team", "How do I cancel?"),
        ]
    )

    # the runtime API serves the template as written, its variables and its messages
    live = server.runtime(NAME, "production")
    assert (live["version"], live["system_prompt"]) == ("1.0.0", V1)
    assert (live["variables"], live["messages"]) == (VARIABLES, [])
    staged = server.runtime(NAME, "staging")
    assert (staged["version"], staged["system_prompt"], staged["variables"]) == (
        "1.1.0",
        V2,
        VARIABLES,
    )

    # a chat prompt with few-shot turns, in staging
    chat = prompt_yaml(
        CHAT,
        "1.0.0",
        system_prompt="You sell {{ product }}.",
        variables={"product": "promptship", "customer_name": None},
        messages=[
            {"role": "user", "content": "Hi, I am {{ customer_name }}."},
            {"role": "assistant", "content": "Welcome, {{ customer_name }}! Ask away."},
        ],
        tests=[
            {
                "input": "Price?",
                "expected": "price",
                "type": "icontains",
                "vars": {"customer_name": "Ada"},
            }
        ],
    )
    assert server.push(chat).status_code == 201
    await to_staging(core, CHAT, "1.0.0")
    assert server.runtime(CHAT, "staging")["messages"] == [
        {"role": "user", "content": "Hi, I am {{ customer_name }}."},
        {"role": "assistant", "content": "Welcome, {{ customer_name }}! Ask away."},
    ]
    chat_turns = [
        {"role": "user", "content": "Hi, I am Ada."},
        {"role": "assistant", "content": "Welcome, Ada! Ask away."},
        {"role": "user", "content": "What does it cost?"},
    ]

    # both clients render what the validation run and the soak rendered
    with PromptClient(server.url, APP, wait=2) as client:
        prompt = client.get(NAME, "production")
        assert (prompt.system_prompt, dict(prompt.variables), prompt.messages) == (
            V1,
            VARIABLES,
            (),
        )
        assert prompt.render(customer_name="Ada", plan="pro", locale="fi") == Rendered(
            v1("Ada", "pro"), []
        )
        assert client.get_system_prompt(NAME, "production", customer_name="Grace") == v1("Grace")
        assert client.get_system_prompt(NAME, "staging", customer_name="Grace") == v2("Grace")
        with pytest.raises(MissingVariable) as missing:
            client.get_system_prompt(NAME, "production", plan="pro")
        assert missing.value.names == ["customer_name"]
        assert str(missing.value).startswith(
            "customer-support 1.0.0 in production: missing variable customer_name"
        )
        rendered = client.get(CHAT, "staging").render(customer_name="Ada")
        assert rendered.system == "You sell promptship."
        assert rendered.conversation("What does it cost?") == chat_turns
    async with AsyncPromptClient(server.url, APP, wait=2) as aclient:
        prompt = await aclient.get(NAME, "production")
        assert prompt.render(customer_name="Ada", plan="pro") == Rendered(v1("Ada", "pro"), [])
        assert await aclient.get_system_prompt(NAME, "production", customer_name="Grace") == v1(
            "Grace"
        )
        with pytest.raises(MissingVariable, match="missing variable customer_name"):
            await aclient.get_system_prompt(NAME, "production")
        rendered = (await aclient.get(CHAT, "staging")).render(customer_name="Ada")
        assert rendered.conversation("What does it cost?") == chat_turns


# -- refused at push -------------------------------------------------------------------------

UNDECLARED = """\
name: billing-bot
version: 1.0.0
model: claude-sonnet-4-5
variables:
  customer_name: null
system_prompt: |
  You are helping {{ customer_name }}.
  They are on the {{ plan }} plan.
"""
WHY = (
    "system_prompt, line 2 (file line 8): uses the variable 'plan', which variables: does "
    "not declare"
)


def test_a_template_using_an_undeclared_variable_is_refused_at_push(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptship.cli import app

    bad = tmp_path / "billing.yaml"
    bad.write_text(UNDECLARED)
    remote = CliRunner().invoke(app, ["push", str(bad), "--server", server.url, "--token", CI])
    assert remote.exit_code == 2, remote.output
    assert f"{bad}: {WHY}" in " ".join(remote.stderr.split())
    assert "variables: {plan: null}" in remote.stderr  # how to fix it

    config = tmp_path / "promptship.yaml"
    config.write_text(TEST_POLICY)
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", server.db_url)
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(config))
    local = CliRunner().invoke(app, ["--as", "U09", "push", str(bad)])
    assert local.exit_code == 2 and WHY in " ".join(local.stderr.split())

    as_yaml = server.push(UNDECLARED)
    assert as_yaml.status_code == 400
    assert f"request body: {WHY}" in as_yaml.json()["detail"]
    import yaml

    as_json = server.http.post("/v1/prompts", json=yaml.safe_load(UNDECLARED), headers=CI_AUTH)
    assert as_json.status_code == 400
    assert (
        "request body: system_prompt, line 2: uses the variable 'plan'"
        in (as_json.json()["detail"])
    )
    listed = server.http.get("/v1/prompts", headers=CI_AUTH).json()
    assert listed == []  # nothing stored


# -- the client on its own -------------------------------------------------------------------


def test_a_copy_from_a_server_before_templates_is_served_as_written() -> None:
    body = {
        "name": NAME,
        "environment": "production",
        "version": "1.0.0",
        "system_prompt": "Reply with {{ a JSON object }} only.",  # literal braces, back then
        "model": "claude-sonnet-4-5",
        "provider": "anthropic",
        "temperature": 0.7,
        "max_tokens": 500,
    }
    old = Prompt.from_response(httpx.Response(200, json=body, headers={"etag": '"1-ab"'}))
    assert (dict(old.variables), old.messages) == ({}, ())
    assert old.render(customer_name="Ada") == Rendered(body["system_prompt"], [])


def test_vars_the_server_would_refuse_drop_the_sample_not_the_batch(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.push(prompt_yaml(NAME, "1.0.0")).status_code == 201
    with caplog.at_level(logging.WARNING, logger="promptship.client"):
        with PromptClient(server.url, APP, flush_interval=3600) as client:
            client.log_traffic(NAME, "production", "q1", vars={"when": datetime.now(UTC)})
            client.log_traffic(NAME, "production", "q2", vars={"first name": "Ada"})
            client.log_traffic(NAME, "production", "q3", vars={"customer_name": "Ada"})
    assert client.dropped == 2
    assert "vars: values must be text, finite numbers" in caplog.text
    assert "vars: 'first name' is not a variable name" in caplog.text
    assert "refused" not in caplog.text  # the batch that went was whole

    async def stored() -> list[tuple[str, Any]]:
        from sqlalchemy import select

        from promptship.store.models import TrafficSample

        db = Database(server.db_url)
        try:
            async with db.reader() as session:
                rows = await session.execute(select(TrafficSample.input, TrafficSample.vars))
                return [tuple(row) for row in rows]
        finally:
            await db.dispose()

    assert asyncio.run(stored()) == [("q3", {"customer_name": "Ada"})]


async def test_a_chat_prompt_sends_its_few_shot_turns_before_each_case(
    core: Promptship, model: ModelDouble
) -> None:
    from promptship.domain.promptfile import parse_prompt

    chat = prompt_yaml(
        CHAT,
        "1.0.0",
        system_prompt="You sell {{ product }}.",
        variables={"product": "promptship", "customer_name": None},
        messages=[
            {"role": "user", "content": "Hi, I am {{ customer_name }}."},
            {"role": "assistant", "content": "Welcome, {{ customer_name }}!"},
        ],
        tests=[
            {"input": "Price?", "expected": "Price?", "type": "contains", "vars": v}
            for v in ({"customer_name": "Ada"}, {"customer_name": "Bo", "product": "tea"})
        ],
    )
    await core.push(parse_prompt(chat), slack(REQUESTER))
    async with SuiteRunner(
        core, settings=RunnerSettings(timeout=5, max_retries=1, concurrency=1)
    ) as work:
        run = await work.execute(await work.start(CHAT, "1.0.0", slack(REQUESTER)))
    assert (run.passed, run.errored) == (2, 0)
    sent = sorted((r["system"], json.dumps(r["messages"])) for r in model.requests)
    assert sent == sorted(
        (
            f"You sell {product}.",
            json.dumps(
                [
                    {"role": "user", "content": f"Hi, I am {name}."},
                    {"role": "assistant", "content": f"Welcome, {name}!"},
                    {"role": "user", "content": "Price?"},
                ]
            ),
        )
        for name, product in (("Ada", "promptship"), ("Bo", "tea"))
    )


def test_a_batch_of_samples_with_large_vars_is_sent_in_parts_under_the_body_limit() -> None:
    from promptship.client import BATCH_BYTES, _by_size

    samples = [
        {
            "prompt": NAME,
            "environment": "production",
            "input": f"q{i}",
            "vars": {"doc": "x" * 90_000},
        }
        for i in range(1000)
    ]
    parts = _by_size(samples)
    assert [s for part in parts for s in part] == samples  # nothing lost, order kept
    assert all(len(json.dumps(part).encode()) <= BATCH_BYTES for part in parts)
    # 90 MB of vars in parts filled up to the limit, not 1,000 samples in one 90 MB body
    assert all(len(json.dumps(part).encode()) > BATCH_BYTES - 100_000 for part in parts[:-1])
