"""dev and the deployment file over the API, served for real: promoting to dev, fetching
dev with the client, and ``apply`` through a server."""

from __future__ import annotations

from typer.testing import CliRunner

from promptship.cli import app
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
