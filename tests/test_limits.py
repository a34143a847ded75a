"""What a request may cost: body caps before any handler reads, bounded JSON and YAML,
bounded numbers, a readiness probe that answers while the database stalls, and a property
test feeding every route garbage through the real ASGI app. Both databases."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.testclient import TestClient

from promptship.auditkeys import generate_key
from promptship.config import Settings
from promptship.domain.promptfile import parse_prompt
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import slack as slack_user
from tests.slack_helpers import BOT_TOKEN, SIGNING_SECRET, sign

NAME = "customer-support"
WRITE = {"Authorization": "Bearer ci-token-0123456789"}
MiB = 2**20
BILLION_LAUGHS = """name: customer-support
version: 9.9.9
model: m
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
system_prompt: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def make_app(database_url: str, slack_api_url: str, **env: Any) -> Starlette:
    return create_app(
        Settings(
            PROMPTSHIP_DATABASE_URL=database_url,
            PROMPTSHIP_API_TOKENS="write:ci:ci-token-0123456789",
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack_api_url,
            **env,
        ),
        make_policy(),
        migrate=False,
        workers=False,
    )


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    with SlackDouble(token=BOT_TOKEN) as double:
        yield double


@pytest.fixture
async def app(db: Database, slack: SlackDouble) -> AsyncIterator[Starlette]:
    await Promptship(db, make_policy()).push(parse_prompt(prompt_yaml()), slack_user("U09"))
    application = make_app(db.url, slack.api_url)
    yield application
    await application.state.core.db.dispose()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://promptship") as http:
        yield http


def assert_problem(response: httpx.Response, status: int, detail: str = "") -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    document = response.json()
    required = {"type", "title", "status", "detail"}
    assert required <= set(document) <= required | {"hint"} and document["status"] == status
    assert detail in document["detail"]


async def post_stream(
    app: Starlette, path: str, chunk: bytes, total: int, headers: dict[str, str]
) -> tuple[int, dict[str, str], int]:
    """POST ``total`` bytes in ``chunk``-sized ``http.request`` messages straight to the ASGI
    app (no Content-Length, as a chunked upload); (status, headers, bytes the app read)."""
    read = 0
    answer: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read >= total:
            return {"type": "http.request", "body": b"", "more_body": False}
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.update(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("promptship", 80),
    }
    await app(scope, receive, send)
    names = {k.decode(): v.decode() for k, v in answer.get("headers", [])}
    return answer["status"], names, read


# -- body caps ---------------------------------------------------------------------------


async def test_a_declared_body_over_the_cap_is_refused_before_it_is_read(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    slack = await client.post(
        "/slack/events", content=b"x" * (MiB + 1), headers={"Content-Type": "application/json"}
    )
    assert_problem(slack, 413, "over 1 MiB")
    assert slack.headers["connection"] == "close"
    traffic = await client.post("/v1/traffic", content=b"[" + b" " * 8 * MiB + b"]", headers=WRITE)
    assert_problem(traffic, 413, "over 8 MiB")
    push = await client.post("/v1/prompts", content=b"#" * (MiB + 1), headers=WRITE)
    assert_problem(push, 413, "over 1 MiB")
    promote = await client.post(
        f"/v1/prompts/{NAME}/promotions", content=b" " * (64 * 1024 + 1), headers=WRITE
    )
    assert_problem(promote, 413, "over 65,536 bytes")
    # refused on the header alone: the app never asked for a byte of the body
    status, _, read = await post_stream(
        app, "/v1/traffic", b"[]", 2, {**WRITE, "Content-Length": str(300 * 10**6)}
    )
    assert (status, read) == (413, 0)


async def test_a_streamed_body_is_cut_off_at_the_cap(app: Starlette) -> None:
    chunk = b"x" * 65536
    status, headers, read = await post_stream(
        app, "/slack/events", chunk, 64 * MiB, {"Content-Type": "application/json"}
    )
    assert status == 413 and headers["content-type"] == "application/problem+json"
    assert read <= MiB + len(chunk)  # not one chunk more than the cap was read
    status, _, read = await post_stream(app, "/v1/traffic", chunk, 64 * MiB, WRITE)
    assert status == 413 and read <= 8 * MiB + len(chunk)
    # a body under the cap streams through to the handler
    sample = json.dumps([{"prompt": NAME, "environment": "production", "input": "hi"}]).encode()
    status, _, read = await post_stream(app, "/v1/traffic", sample, len(sample), WRITE)
    assert status == 201 and read == len(sample)


async def test_the_caps_are_settings(db: Database, slack: SlackDouble) -> None:
    small = make_app(db.url, slack.api_url, PROMPTSHIP_MAX_BODY_PUSH=1000)
    transport = httpx.ASGITransport(app=small)
    async with httpx.AsyncClient(transport=transport, base_url="http://promptship") as http:
        pushed = await http.post(
            "/v1/prompts", content=prompt_yaml(system_prompt="x" * 1000), headers=WRITE
        )
        assert_problem(pushed, 413, "over 1,000 bytes")
        fits = await http.post("/v1/prompts", content=prompt_yaml(), headers=WRITE)
        assert fits.status_code == 201
    await small.state.core.db.dispose()


# -- bounded documents and numbers ---------------------------------------------------------


async def test_a_yaml_alias_bomb_is_refused_at_once(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.post("/v1/prompts", content=BILLION_LAUGHS, headers=WRITE)
    assert time.monotonic() - started < 2
    assert_problem(response, 400, "request body: line 4: YAML aliases are not allowed")
    versions = await client.get(f"/v1/prompts/{NAME}/versions", headers=WRITE)
    assert [v["version"] for v in versions.json()] == ["1.0.0"]  # nothing was stored


async def test_a_pushed_prompt_with_a_key_written_twice_is_a_bad_request(
    client: httpx.AsyncClient,
) -> None:
    twice = prompt_yaml(version="2.0.0").replace(
        "version: 2.0.0\n", "version: 2.0.0\nversion: 3.0.0\n", 1
    )
    assert "version: 3.0.0" in twice
    response = await client.post("/v1/prompts", content=twice, headers=WRITE)
    assert_problem(response, 400, "version: duplicate key (first at line")
    versions = await client.get(f"/v1/prompts/{NAME}/versions", headers=WRITE)
    assert [v["version"] for v in versions.json()] == ["1.0.0"]  # nothing was stored


async def test_deep_nesting_is_a_bad_request_not_a_crash(client: httpx.AsyncClient) -> None:
    deep_json = "[" * 200_000 + "]" * 200_000
    for path in ("/v1/traffic", f"/v1/prompts/{NAME}/promotions"):
        response = await client.post(path, content=deep_json[:60_000], headers=WRITE)
        assert_problem(response, 400, "nested deeper than 64 levels")
    # 200,000 lists are more than any batch holds: refused by their count, before parsing
    traffic = await client.post("/v1/traffic", content=deep_json, headers=WRITE)
    assert_problem(traffic, 400, "more than 100,000 JSON lists, mappings and items")
    pushed = await client.post(
        "/v1/prompts",
        content=deep_json,
        headers={**WRITE, "Content-Type": "application/json"},
    )
    assert_problem(pushed, 400, "nested deeper than 64 levels")
    as_yaml = await client.post("/v1/prompts", content="a: " + "[" * 200_000, headers=WRITE)
    assert_problem(as_yaml, 400, "request body")


async def test_numbers_are_bounded(client: httpx.AsyncClient) -> None:
    history = await client.get(f"/v1/prompts/{NAME}/history?before=" + "9" * 30, headers=WRITE)
    assert_problem(history, 400, "before must be a whole number of at most 18 digits")
    unicode_digit = await client.get(f"/v1/prompts/{NAME}/history?limit=²", headers=WRITE)
    assert_problem(unicode_digit, 400, "limit must be a whole number")
    big_major = await client.post(
        "/v1/prompts",
        content=prompt_yaml(version="1" + "0" * 5000 + ".0.0"),
        headers=WRITE,
    )
    assert_problem(big_major, 400, "request body: version: a version is at most 128 characters")
    over_int = await client.post(
        "/v1/prompts", content=prompt_yaml(version="2147483648.0.0"), headers=WRITE
    )
    assert_problem(over_int, 400, "each number of a version is at most 2,147,483,647")
    shown = await client.get(f"/v1/prompts/{NAME}/versions/{'1' * 5000}.0.0", headers=WRITE)
    assert_problem(shown, 400, "invalid version")
    long_int = await client.post(
        "/v1/traffic", content=b'[{"prompt": ' + b"1" * 5000 + b"}]", headers=WRITE
    )
    assert_problem(long_int, 400, "a number of 5,000 digits")


async def test_slack_refuses_unsigned_bodies_before_bolt_parses_them(
    client: httpx.AsyncClient,
) -> None:
    deep = '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"
    unsigned = await client.post(
        "/slack/events", content=deep, headers={"Content-Type": "application/json"}
    )
    assert unsigned.status_code == 401 and unsigned.json() == {"error": "invalid request"}
    signed = await client.post(
        "/slack/events", content=deep, headers={"Content-Type": "application/json", **sign(deep)}
    )
    assert_problem(signed, 400, "nested deeper than 64 levels")
    form = "payload=" + "%5B" * 100_000
    signed_form = await client.post(
        "/slack/events",
        content=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", **sign(form)},
    )
    assert_problem(signed_form, 400, "the Slack payload: nested deeper than 64 levels")
    not_an_object = "[1]"
    listed = await client.post(
        "/slack/events",
        content=not_an_object,
        headers={"Content-Type": "application/json", **sign(not_an_object)},
    )
    assert_problem(listed, 400, "a Slack request body is a JSON object")


# -- the database stalls -----------------------------------------------------------------


async def test_readyz_answers_within_two_seconds_while_the_database_stalls(
    db: Database, client: httpx.AsyncClient
) -> None:
    holder = create_async_engine(db.url)
    async with holder.connect() as conn:
        if db.is_sqlite:
            await conn.exec_driver_sql("BEGIN EXCLUSIVE")  # no other connection may write
        else:
            await conn.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        response = await asyncio.wait_for(client.get("/readyz"), 20)  # fail, do not hang
        took = time.monotonic() - started
        await conn.rollback()
    await holder.dispose()
    assert took < 3.5, f"/readyz took {took:.1f} s"
    if db.is_sqlite:  # readers never wait for SQLite's writer
        assert response.status_code == 200
    else:
        assert response.status_code == 503
        assert response.json()["problems"] == ["database did not answer within 2 s"]


async def test_a_postgresql_query_gives_up_after_the_database_timeout(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite's timeout is its busy timeout, covered by the lock test above")
    quick = Database(db.url, timeout=1)
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - the driver's timeout error, whatever wraps it
        async with quick.reader() as session:
            await session.execute(text("SELECT pg_sleep(10)"))
    assert time.monotonic() - started < 5
    await quick.dispose()


@pytest.mark.parametrize("command", [["list"], ["serve", "--port", "0"]])
def test_the_cli_says_it_cannot_reach_the_database(tmp_path: Path, command: list[str]) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PROMPTSHIP_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/x",
        "PROMPTSHIP_AUDIT_KEY": generate_key(),
        "PROMPTSHIP_DB_TIMEOUT": "5",
    }
    done = subprocess.run(
        [sys.executable, "-m", "promptship.cli", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach the database at 127.0.0.1:1 (connection refused)" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# -- anything at all ---------------------------------------------------------------------

ROUTES = [
    ("POST", "/slack/events"),
    ("POST", "/v1/prompts"),
    ("POST", "/v1/traffic"),
    ("POST", f"/v1/prompts/{NAME}/promotions"),
    ("GET", f"/v1/prompts/{NAME}/history"),
    ("GET", f"/v1/prompts/{NAME}/diff"),
    ("GET", f"/v1/prompts/{NAME}/versions/{{version}}"),
    ("GET", f"/v1/prompts/{NAME}/environments/production"),
]
nested = st.integers(1, 300_000).map(lambda n: "[" * n + "]" * n)
garbage_bodies = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(str.encode),
    nested.map(str.encode),
    st.integers(1, 300_000).map(lambda n: ("{" + '"a":{' * n).encode()),
    st.integers(1, 300_000).map(lambda n: ("a:\n" + "- " * n + "x").encode()),
    st.sampled_from([64 * 1024 + 1, MiB + 1, 8 * MiB + 1]).map(lambda n: b"x" * n),
    st.integers(4300, 20_000).map(lambda n: b'{"samples": [' + b"7" * n + b"]}"),
    st.just(BILLION_LAUGHS.encode()),
)
query_values = st.one_of(
    st.text(max_size=40),
    st.integers(0, 10**40).map(str),
    st.sampled_from(["nan", "inf", "-1", "1e999", "²", "1" * 5000]),
)


def test_no_body_or_query_string_makes_a_server_error(
    database_url: str, slack: SlackDouble
) -> None:
    app = make_app(database_url, slack.api_url)
    with TestClient(app) as client:  # a handler's exception would fail the test here

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(
            route=st.sampled_from(ROUTES),
            body=garbage_bodies,
            query=st.dictionaries(
                st.sampled_from(["before", "limit", "wait", "from", "to", "environment"]),
                query_values,
                max_size=4,
            ),
            version=st.one_of(query_values, st.just("1" + "0" * 5000 + ".0.0")),
            content_type=st.sampled_from(
                ["application/json", "application/yaml", "application/x-www-form-urlencoded", ""]
            ),
            signed=st.booleans(),
            authorised=st.booleans(),
        )
        def any_request(
            route: tuple[str, str],
            body: bytes,
            query: dict[str, str],
            version: str,
            content_type: str,
            signed: bool,
            authorised: bool,
        ) -> None:
            method, path = route
            path = path.replace("{version}", quote(version, safe="") or "x")
            headers = {"Content-Type": content_type} if content_type else {}
            if authorised:
                headers.update(WRITE)
            if signed:
                headers.update(sign_bytes(body))
            response = client.request(
                method,
                path,
                params={**query, "author": "U09"} if path == "/v1/prompts" else query,
                content=body if method == "POST" else None,
                headers=headers,
            )
            assert response.status_code < 500, response.text[:500]
            if response.status_code < 400:
                return
            if path == "/slack/events" and "problem" not in response.headers["content-type"]:
                # Bolt's own answers: 401 to a bad signature, 404 to a signed request it
                # has no listener for
                assert response.status_code in (401, 404) and "error" in response.json()
                assert response.status_code == 404 or not signed
                return
            assert response.headers["content-type"] == "application/problem+json"
            assert json.loads(response.text)["status"] == response.status_code

        any_request()


def sign_bytes(body: bytes) -> dict[str, str]:
    """Slack's signature over raw bytes (``sign`` takes text)."""
    import hashlib
    import hmac

    ts = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest.hexdigest()}"}
