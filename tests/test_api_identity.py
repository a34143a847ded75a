"""Who acts through the HTTP API: the token's identity, never a name the caller fills in.

The real app is served over loopback on SQLite and PostgreSQL; people hold stored tokens
(issued like ``promptship token create``), services hold tokens from PROMPTSHIP_API_TOKENS.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from promptship.config import Settings
from promptship.domain.identity import SYSTEM, Scope
from promptship.errors import BadInput
from promptship.server import create_app
from promptship.services import Promptship, tokens
from promptship.services.views import RequestView
from promptship.store.db import Database
from promptship.testing.serve import ServerThread
from tests.conftest import TEST_AUDIT_KEY, make_policy, prompt_yaml
from tests.helpers import REQUESTER, case_results, slack

NAME = "customer-support"
POLICY = make_policy('identities: {"github:alice": U01}')
RUNTIME, READER, CI, CI_ADMIN = (
    "runtime-secret-0123456789",
    "reader-secret-0123456789",
    "ci-secret-0123456789",
    "ci-admin-secret-0123456789",
)
ENV_TOKENS = (
    f"runtime:app:{RUNTIME},read:dashboard:{READER},write:ci-github:{CI},admin:ci-admin:{CI_ADMIN}"
)


def bearer(secret: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **headers}


class Served:
    """The served app, a core on the same database, and the people's stored tokens."""

    def __init__(self, url: str, database_url: str) -> None:
        self.url = url
        self.database_url = database_url
        self.http = httpx.Client(base_url=url, timeout=60)
        self.person: dict[str, str] = {}

    def core(self, use: Any) -> Any:
        async def go() -> Any:
            db = Database(self.database_url, audit_keys=TEST_AUDIT_KEY)
            try:
                return await use(Promptship(db, POLICY))
            finally:
                await db.dispose()

        return asyncio.run(go())

    def issue(self, subject: str, scope: Scope) -> str:
        async def go(core: Promptship) -> str:
            async with core.db.transaction() as session:
                issued = await tokens.create(
                    session, core.deps, subject=subject, service=False, scope=scope, actor=SYSTEM
                )
            return issued.secret

        secret: str = self.core(go)
        self.person[subject] = secret
        return secret

    def push(self, version: str, secret: str = CI, **headers: str) -> httpx.Response:
        return self.http.post(
            "/v1/prompts",
            content=prompt_yaml(NAME, version, system_prompt=f"Version {version}."),
            headers=bearer(secret, **{"Content-Type": "application/yaml", **headers}),
        )

    def to_staging(self, version: str) -> None:
        self.core(
            lambda c: c.record_validation_run(NAME, version, case_results(10), slack(REQUESTER))
        )
        staged = self.http.post(
            f"/v1/prompts/{NAME}/promotions",
            json={"version": version, "environment": "staging"},
            headers=bearer(CI),
        )
        assert staged.status_code == 201 and staged.json()["state"] == "promoted", staged.text

    def request_production(self, version: str) -> int:
        self.to_staging(version)
        opened = self.http.post(
            f"/v1/prompts/{NAME}/promotions",
            json={"version": version, "environment": "production"},
            headers=bearer(CI),
        )
        assert opened.status_code == 201 and opened.json()["state"] == "open", opened.text
        request_id: int = opened.json()["id"]
        return request_id

    def approve(self, request_id: int, secret: str, **headers: str) -> httpx.Response:
        return self.http.post(
            f"/v1/requests/req-{request_id}/approve",
            json={"comment": "looks right"},
            headers=bearer(secret, **headers),
        )


def serve(database_url: str, env_tokens: str | None = ENV_TOKENS) -> ServerThread:
    settings = Settings(PROMPTSHIP_DATABASE_URL=database_url, PROMPTSHIP_API_TOKENS=env_tokens)
    return ServerThread(create_app(settings, POLICY, workers=False))


@pytest.fixture
def api(db: Database, database_url: str) -> Iterator[Served]:
    with serve(database_url) as server:
        served = Served(server.url, database_url)
        served.issue("U01", Scope.APPROVE)
        served.issue("U02", Scope.APPROVE)
        served.issue("U07", Scope.ADMIN)
        yield served
        served.http.close()


def test_an_approver_cannot_push_as_someone_else_to_approve_it_later(api: Served) -> None:
    refused = api.push("1.0.0", api.person["U01"], **{"X-Promptship-User": "ci-bot"})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "this token speaks for U01; it cannot push as ci-bot" in refused.json()["detail"]
    by_query = api.http.post(
        "/v1/prompts?author=ci-bot",
        content=prompt_yaml(NAME, "1.0.0"),
        headers=bearer(api.person["U01"]),
    )
    assert by_query.status_code == 403
    as_requester = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.0.0", "environment": "staging", "requester": "U04"},
        headers=bearer(CI),
    )
    assert as_requester.status_code == 403
    assert "ci-github (service)" in as_requester.json()["detail"]
    # naming yourself, directly or through identities:, is the same as not naming anyone
    assert api.push("1.0.0", api.person["U01"], **{"X-Promptship-User": "github:alice"}).json()[
        "created"
    ]
    versions = api.http.get(f"/v1/prompts/{NAME}/versions", headers=bearer(READER)).json()
    assert [(v["version"], v["author"]) for v in versions] == [("1.0.0", "U01")]


def test_an_admin_pushes_on_behalf_and_the_author_rule_then_holds(api: Served) -> None:
    pushed = api.push("1.0.0", CI_ADMIN, **{"X-Promptship-User": "github:alice"})
    assert pushed.status_code == 201, pushed.text
    history = api.http.get(f"/v1/prompts/{NAME}/history", headers=bearer(READER)).json()
    [event] = [e for e in history["events"] if e["action"] == "version.registered"]
    assert event["actor"] == "U01"
    assert event["details"]["on_behalf_of_by"] == "ci-admin"
    assert event["details"]["auth"] == "token"
    unmapped = api.push("1.0.1", CI_ADMIN, **{"X-Promptship-User": "github:mallory"})
    assert unmapped.status_code == 400 and "not mapped under identities" in unmapped.text

    request_id = api.request_production("1.0.0")
    own = api.approve(request_id, api.person["U01"])
    assert own.status_code == 403
    assert "you wrote customer-support 1.0.0; someone else must approve it" in own.json()["detail"]
    # an admin may ask on someone's behalf, never decide for them
    proxy = api.approve(request_id, api.person["U07"], **{"X-Promptship-User": "U02"})
    assert proxy.status_code == 403
    assert "no one decides on behalf of U02" in proxy.json()["detail"]


def test_an_admin_cannot_approve_what_they_pushed_or_asked_for_on_someones_behalf(
    api: Served,
) -> None:
    admin = api.issue("U06", Scope.ADMIN)  # an approver who also holds an admin token
    pushed = api.push("1.0.0", admin, **{"X-Promptship-User": "U09"})
    assert pushed.status_code == 201, pushed.text
    request_id = api.request_production("1.0.0")
    own = api.approve(request_id, admin)
    assert own.status_code == 403
    assert (
        "you pushed customer-support 1.0.0 on behalf of U09; someone else must approve it"
        in own.json()["detail"]
    )
    assert api.approve(request_id, api.person["U01"]).status_code == 200
    assert api.approve(request_id, api.person["U02"]).json()["request"]["state"] == "promoted"

    api.push("1.1.0")
    api.to_staging("1.1.0")
    asked = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.1.0", "environment": "production", "requester": "U09"},
        headers=bearer(admin),
    )
    assert asked.status_code == 201 and asked.json()["requester"] == "U09", asked.text
    own = api.approve(asked.json()["id"], admin)
    assert own.status_code == 403
    assert (
        f"you requested req-{asked.json()['id']} on behalf of U09; someone else must approve it"
        in own.json()["detail"]
    )


def test_a_service_admin_token_acts_for_a_person_only_to_push_as_the_author(
    api: Served,
) -> None:
    me = api.http.get("/v1/whoami", headers=bearer(CI_ADMIN)).json()
    assert me["service"] is True and "decide" not in me["permissions"]
    assert api.push("1.0.0", CI_ADMIN, **{"X-Promptship-User": "U09"}).status_code == 201
    request_id = api.request_production("1.0.0")
    for method, path, body, headers in (
        ("POST", f"/v1/prompts/{NAME}/breakglass",
         {"version": "1.0.0", "reason": "outage", "requester": "U06"}, {}),
        ("POST", f"/v1/prompts/{NAME}/promotions",
         {"version": "1.0.0", "environment": "production", "requester": "U01"}, {}),
        ("POST", f"/v1/requests/req-{request_id}/cancel", None, {"X-Promptship-User": "U01"}),
    ):  # fmt: skip
        refused = api.http.request(method, path, json=body, headers=bearer(CI_ADMIN, **headers))
        assert refused.status_code == 403, refused.text
        assert (
            "ci-admin is a service: it acts for a person only as the author of a push"
            in (refused.json()["detail"])
        )
    shown = api.http.get(f"/v1/requests/{request_id}", headers=bearer(READER)).json()
    assert shown["state"] == "open"


def test_a_service_token_cannot_decide(api: Served) -> None:
    api.push("1.0.0")
    request_id = api.request_production("1.0.0")
    refused = api.approve(request_id, CI_ADMIN)
    assert refused.status_code == 403
    assert "ci-admin is a service" in refused.json()["detail"]
    write = api.approve(request_id, CI)
    assert write.status_code == 403
    assert "this token's scope is write; this needs decide" in write.json()["detail"]


def test_a_person_approves_through_the_api_and_the_request_shows_it(api: Served) -> None:
    from bot.blocks.messages import request_message

    api.push("1.0.0")
    request_id = api.request_production("1.0.0")
    first = api.approve(request_id, api.person["U02"])
    assert first.status_code == 200, first.text
    assert first.json()["recorded"] is True and first.json()["request"]["state"] == "open"
    shown = api.http.get(f"/v1/requests/{request_id}", headers=bearer(READER)).json()
    assert [(d["user"], d["approve"], d["comment"]) for d in shown["decisions"]] == [
        ("U02", True, "looks right")
    ]
    message = request_message(RequestView.model_validate(shown))  # as Slack shows it
    assert "<@U02>" in json.dumps(message.blocks) and f"req-{request_id}" in message.text
    second = api.approve(request_id, api.person["U01"])
    assert second.status_code == 200 and second.json()["request"]["state"] == "promoted"
    live = api.http.get(f"/v1/prompts/{NAME}/environments/production", headers=bearer(RUNTIME))
    assert live.json()["version"] == "1.0.0"
    bad_id = api.http.get("/v1/requests/req-x", headers=bearer(READER))
    assert bad_id.status_code == 400 and "request ids look like req-42" in bad_id.text


def test_decisions_rollback_override_cancel_and_whoami(api: Served) -> None:
    me = api.http.get("/v1/whoami", headers=bearer(api.person["U07"])).json()
    assert (me["subject"], me["service"], me["scope"]) == ("U07", False, "admin")
    assert "on-behalf" in me["permissions"]
    app = api.http.get("/v1/whoami", headers=bearer(RUNTIME)).json()
    assert app["permissions"] == ["fetch", "traffic"] and app["token"] == "environment"

    api.push("1.0.0")
    api.push("1.1.0")
    first = api.request_production("1.0.0")
    assert api.approve(first, api.person["U01"]).status_code == 200
    assert api.approve(first, api.person["U02"]).json()["request"]["state"] == "promoted"
    second = api.request_production("1.1.0")
    cancelled = api.http.post(f"/v1/requests/{second}/cancel", headers=bearer(CI))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"

    api.push("1.2.0")
    api.core(
        lambda c: c.record_validation_run(
            NAME, "1.2.0", case_results(10), slack(REQUESTER), regressions=["q1"]
        )
    )
    blocked = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.2.0", "environment": "staging"},
        headers=bearer(CI),
    )
    assert blocked.status_code == 409 and "override with a reason" in blocked.json()["detail"]
    override = f"/v1/prompts/{NAME}/versions/1.2.0/override"
    assert api.http.post(override, json={"reason": "x"}, headers=bearer(CI)).status_code == 403
    accepted = api.http.post(
        override, json={"reason": "known flake"}, headers=bearer(api.person["U01"])
    )
    assert (
        accepted.status_code == 200
        and accepted.json()["regression_override"] == "known flake (by U01)"
    )

    rollback = f"/v1/prompts/{NAME}/environments/staging/rollback"
    rolled = api.http.post(rollback, json={"reason": "bad"}, headers=bearer(api.person["U02"]))
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["to_version"], rolled.json()["actor"]) == ("1.0.0", "U02")
    glass = api.http.post(
        f"/v1/prompts/{NAME}/breakglass",
        json={"version": "9.9.9", "reason": "x"},
        headers=bearer(CI),
    )
    assert glass.status_code == 404


def test_a_runtime_token_fetches_and_logs_traffic_and_nothing_else(api: Served) -> None:
    api.push("1.0.0")
    request_id = api.request_production("1.0.0")
    api.approve(request_id, api.person["U01"])
    api.approve(request_id, api.person["U02"])
    live = api.http.get(f"/v1/prompts/{NAME}/environments/production", headers=bearer(RUNTIME))
    assert live.status_code == 200 and live.json()["version"] == "1.0.0"
    sample = {"prompt": NAME, "environment": "production", "input": "hi", "output": "hello"}
    assert api.http.post("/v1/traffic", json=[sample], headers=bearer(RUNTIME)).status_code == 201
    pushed = api.push("1.1.0", RUNTIME)
    assert pushed.status_code == 403
    assert pushed.json()["detail"] == (
        "this token's scope is runtime; this needs push (scopes: write, approve, admin)"
    )
    for path in (f"/v1/prompts/{NAME}/versions", "/v1/prompts", "/v1/deployments", "/metrics"):
        assert api.http.get(path, headers=bearer(RUNTIME)).status_code == 403, path
    reader = api.http.post("/v1/traffic", json=[sample], headers=bearer(READER))
    assert reader.status_code == 403


def test_metrics_need_a_read_token_once_tokens_are_configured(api: Served) -> None:
    missing = api.http.get("/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert api.http.get("/metrics", headers=bearer(READER)).status_code == 200
    assert api.http.get("/metrics", headers=bearer(api.person["U01"])).status_code == 200


def test_stored_tokens_alone_close_the_api(db: Database, database_url: str) -> None:
    with serve(database_url, env_tokens=None) as server:
        served = Served(server.url, database_url)
        assert served.http.get("/metrics").status_code == 200  # nothing configured: open reads
        assert served.http.get("/v1/prompts").status_code == 200
        secret = served.issue("U01", Scope.WRITE)
        deadline = time.monotonic() + 30  # the "any tokens?" answer is kept a few seconds
        while served.http.get("/v1/prompts").status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert served.http.get("/metrics").status_code == 401
        assert served.push("1.0.0", secret).json()["created"] is True
        served.http.close()


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("bogus:tok-0123456789abcdef", "entry 1: unknown scope 'bogus'"),
        (f"read:app:{READER},nonsense:ci:{CI}", "entry 2: unknown scope 'nonsense'"),
        ("write:CI Bot:0123456789abcdef", "entry 1: 'CI Bot' is not a service name"),
        ("write:ci:short", "entry 1: the token is shorter than 16 characters"),
    ],
)
def test_a_bad_env_token_stops_start_up_naming_the_entry(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, entry: str, named: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}"
    with pytest.raises(BadInput, match=named):
        create_app(Settings(PROMPTSHIP_DATABASE_URL=url, PROMPTSHIP_API_TOKENS=entry), POLICY)
    from promptship.cli import app
    from promptship.cli.common import state

    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", url)
    monkeypatch.setenv("PROMPTSHIP_API_TOKENS", entry)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(app, ["serve", "--port", "0"])
    finally:  # serve sends every log record to its JSON handler: put pytest's back
        state.settings = None
        root.handlers[:] = handlers
        root.setLevel(level)
    assert result.exit_code == 2
    assert named in result.stderr and "Traceback" not in result.output


# -- the CLI through the server ------------------------------------------------------------


def cli(api: Served, secret: str, *args: str) -> Any:
    from promptship.cli import app
    from promptship.cli.common import state

    try:
        return CliRunner().invoke(app, [*args, "--server", api.url, "--token", secret])
    finally:
        state.actor = None
        state.as_json = False


def test_the_cli_decides_through_the_server_with_the_persons_token(api: Served) -> None:
    api.push("1.0.0")
    api.push("1.1.0")
    first = api.request_production("1.0.0")
    approved = cli(api, api.person["U01"], "approve", f"req-{first}", "--comment", "ok")
    assert approved.exit_code == 0, approved.output
    assert f"req-{first}" in approved.stdout and "open" in approved.stdout
    done = cli(api, api.person["U02"], "--as", "U09", "approve", str(first))
    assert done.exit_code == 0, done.output
    assert "--as U09 is ignored: the server knows you from your token as U02" in done.stderr
    assert "promoted" in done.stdout
    again = cli(api, api.person["U02"], "approve", str(first))
    assert again.exit_code == 1 and f"req-{first} is promoted" in again.stderr

    api.core(
        lambda c: c.record_validation_run(
            NAME, "1.1.0", case_results(10), slack(REQUESTER), regressions=["q1"]
        )
    )
    args = ["promote", NAME, "1.1.0", "staging", "--override-regressions", "known flake"]
    own = cli(api, api.person["U01"], *args)  # U01 would request it: their override
    assert own.exit_code == 1 and "someone else must override them" in own.stderr, own.output
    promoted = cli(api, CI, "promote", NAME, "1.1.0", "staging")  # counts for another's
    assert promoted.exit_code == 0, promoted.output
    assert "customer-support 1.1.0 → staging" in promoted.stdout and "promoted" in promoted.stdout
    history = api.http.get(f"/v1/prompts/{NAME}/history", headers=bearer(READER)).json()
    [override] = [
        e for e in history["events"] if e["action"] == "validation.regressions_overridden"
    ]
    assert (override["actor"], override["details"]["auth"]) == ("U01", "token")

    rolled = cli(api, api.person["U02"], "rollback", NAME, "staging", "--reason", "bad")
    assert rolled.exit_code == 0, rolled.output
    assert "rolled back customer-support staging: 1.1.0 → 1.0.0" in rolled.stdout
    missing = cli(api, api.person["U02"], "rollback", "nope", "staging")
    assert missing.exit_code == 2 and "no prompt named 'nope'" in missing.stderr


def test_the_cli_with_a_service_token_cannot_approve(api: Served) -> None:
    api.push("1.0.0")
    request_id = api.request_production("1.0.0")
    refused = cli(api, CI_ADMIN, "approve", f"req-{request_id}")
    assert refused.exit_code == 1
    assert "ci-admin is a service" in refused.stderr
    no_token = cli(api, "", "approve", f"req-{request_id}")
    assert no_token.exit_code == 1 and "--token or PROMPTSHIP_TOKEN" in no_token.stderr
