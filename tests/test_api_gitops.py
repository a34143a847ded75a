"""dev and the deployment file over the API, served for real: promoting to dev, fetching
dev with the client, and ``apply`` through a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from promptship.cli import app
from tests.helpers import case_results, slack
from tests.test_api import APP, CI, NAME, READ, WRITE, Api, wait_until
from tests.test_api import api as api  # the served API fixture


def test_dev_is_promoted_and_served_like_the_other_environments(api: Api) -> None:
    from promptship.client import PromptClient

    api.push("1.0.0")
    api.push("1.1.0", system_prompt="Be brief.")
    path = f"/v1/prompts/{NAME}/environments/dev"
    missing = api.http.get(path, headers=READ)
    assert missing.status_code == 404 and "promote a version to dev first" in missing.text

    refused = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.0.0", "environment": "dev"},
        headers=READ,
    )
    assert refused.status_code == 403  # moving dev takes write rights
    moved = api.http.post(
        f"/v1/prompts/{NAME}/promotions",
        json={"version": "1.0.0", "environment": "dev"},
        headers=WRITE,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["to_version"] == "1.0.0" and moved.json()["actor"] == "ci"

    with PromptClient(api.url, APP, ttl=3600, wait=2) as client:
        assert client.get(NAME, "dev").version == "1.0.0"
        cli = CliRunner().invoke(
            app, ["promote", NAME, "1.1.0", "dev", "--server", api.url, "--token", CI]
        )
        assert cli.exit_code == 0, cli.output
        assert f"{NAME} dev: 1.0.0 → 1.1.0 (point by ci)" in cli.stdout
        wait_until(lambda: client.get(NAME, "dev").version == "1.1.0")
        assert client.get_system_prompt(NAME, "dev") == "Be brief."

    listed = api.http.get(f"/v1/prompts/{NAME}", headers=READ).json()
    assert [(d["environment"], d["version"]) for d in listed["environments"]] == [("dev", "1.1.0")]
    exported = api.http.get("/v1/deployments", headers=READ).json()
    assert exported[NAME]["dev"]["prompt_version"] == "1.1.0"
    assert exported[NAME]["dev"]["updated_by"] == "ci" and exported[NAME]["dev"]["updated_at"]


def apply_cli(api: Api, path: Path, *extra: str, token: str = CI) -> Any:
    return CliRunner().invoke(
        app, ["apply", str(path), *extra, "--server", api.url, "--token", token]
    )


def test_ci_applies_the_deployment_file_through_the_server(api: Api, tmp_path: Path) -> None:
    api.push("1.0.0")
    api.to_production("1.0.0")
    api.push("1.1.0", system_prompt="Be brief.")
    api.core(lambda c: c.record_validation_run(NAME, "1.1.0", case_results(10), slack("U04")))
    committed = tmp_path / "deployment.yaml"
    assert (
        CliRunner()
        .invoke(app, ["export", str(committed), "--server", api.url, "--token", APP])
        .exit_code
        == 0
    )
    # the PR: dev and staging to 1.1.0, production to 1.1.0
    exported = yaml.safe_load(committed.read_text())
    for env in ("dev", "staging", "production"):
        exported[NAME][env] = {**exported[NAME]["production"], "prompt_version": "1.1.0"}
        exported[NAME][env].pop("content_hash")
    committed.write_text(yaml.safe_dump(exported, sort_keys=False))

    plan = apply_cli(api, committed, "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert "dry run: nothing changed" in plan.stdout
    assert f"{NAME} production: 1.0.0 → 1.1.0: planned" in plan.stdout
    assert api.http.get("/v1/deployments", headers=READ).json()[NAME].get("dev") is None

    merged = apply_cli(api, committed)
    assert merged.exit_code == 0, merged.output
    assert f"{NAME} dev: — → 1.1.0: done" in merged.stdout
    assert f"{NAME} staging: 1.0.0 → 1.1.0: done" in merged.stdout
    assert f"{NAME} production: 1.0.0 → 1.1.0: opened req-4" in merged.stdout
    assert "0/2 approvals" in merged.stdout
    again = apply_cli(api, committed, "--json")
    assert again.exit_code == 0
    assert [c["outcome"] for c in json.loads(again.stdout)["changes"]] == [
        "unchanged",
        "unchanged",
        "waiting",
    ]

    # a rollback in the file: CI never decides it; the entry is refused, exit 1
    api.core(lambda c: c.approve(4, slack("U01")))
    api.core(lambda c: c.approve(4, slack("U02")))
    exported[NAME]["production"]["prompt_version"] = "1.0.0"
    committed.write_text(yaml.safe_dump(exported, sort_keys=False))
    refused = apply_cli(api, committed)
    assert refused.exit_code == 1
    assert "ci is a service" in refused.stderr
    assert f"/prompt rollback {NAME} production 1.0.0" in refused.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{NAME}:\n  staging:\n    prompt_version: 1.1.0\n    modle: x\n")
    refused_file = apply_cli(api, bad)
    assert refused_file.exit_code == 2
    assert "line 4: customer-support.staging.modle: unknown key (did you mean model?)" in (
        refused_file.stderr
    )
    unknown = api.http.post(
        "/v1/deployments/apply",
        content=f"{NAME}:\n  dev: {{prompt_version: 9.0.0}}\n",
        headers={**WRITE, "Content-Type": "application/yaml"},
    )
    assert (
        unknown.status_code == 400
        and "line 2: customer-support has no version 9.0.0" in (unknown.json()["detail"])
    )
    assert api.http.post("/v1/deployments/apply", content=b"{}", headers=READ).status_code == 403
