"""Text holding a NUL character (U+0000), which PostgreSQL cannot store, is refused where it
comes in, naming the field, on both databases: never a 500 from the database underneath."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from promptship.config import Settings
from promptship.server import create_app
from promptship.testing.serve import ServerThread
from tests.conftest import make_policy, prompt_yaml
from tests.console_helpers import Console
from tests.test_api import NAME, TOKENS, WRITE, Api

NUL = "\u0000"


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    settings = Settings(PROMPTSHIP_DATABASE_URL=db_url, PROMPTSHIP_API_TOKENS=TOKENS)
    with ServerThread(create_app(settings, make_policy(), workers=False)) as server:
        client = Api(server.url, db_url)
        yield client
        client.http.close()


def refused(response: Any, where: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == (
        f"{where} contains a NUL character (U+0000), which cannot be stored"
    )


def test_the_api_refuses_a_nul_naming_the_field(api: Api) -> None:
    assert api.push().status_code == 201
    promote = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.0.0", "environment": "dev", "reason": f"hot{NUL}fix"},
        headers=WRITE,
    )
    refused(promote, "reason")
    sample = {"prompt": NAME, "environment": "production", "input": "hi"}
    traffic = api.http.post(
        "/v1/traffic", json=[sample, {**sample, "input": f"hi{NUL}"}], headers=WRITE
    )
    refused(traffic, "[1].input")
    document = yaml.safe_load(prompt_yaml(NAME, "1.0.1"))
    pushed = api.http.post(
        "/v1/prompts",
        content=json.dumps({**document, "description": f"a{NUL}b"}),
        headers={**WRITE, "Content-Type": "application/json"},
    )
    refused(pushed, "description")
    refused(
        api.http.get(f"/v1/prompts/{NAME}/history?environment=%00", headers=WRITE), "environment"
    )
    # nothing was half-done, and the same requests without the NUL go through
    assert api.http.post("/v1/traffic", json=[sample], headers=WRITE).status_code == 201
    moved = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.0.0", "environment": "dev", "reason": "hotfix"},
        headers=WRITE,
    )
    assert moved.status_code == 200


def test_the_console_refuses_a_nul_in_a_filter(tmp_path: Path, slack_api: Any, db_url: str) -> None:
    console = Console(tmp_path, slack_api, db_url=db_url, PROMPTSHIP_SESSION_SECRET="s" * 40)
    with console.client:
        console.sign_in()
        for path, name in (
            ("/audit?actor=%00", "actor"),
            ("/audit?prompt=a%00", "prompt"),
            ("/audit/export.jsonl?action=%00", "action"),
            ("/?q=%00", "q"),
        ):
            page = console.client.get(path)
            assert page.status_code == 400, path
            assert f"{name} contains a NUL character (U+0000)" in page.text, path
        assert console.client.get("/audit?actor=U0VIEW").status_code == 200
