"""The deployment file in its documented shape: ``{prompt: {environment: {prompt_version,
model, temperature, updated_by, promoted_at | updated_at}}}`` (plus max_tokens and
content_hash), naming the person who caused each move, and readable by the three-line
loader teams already use."""

from __future__ import annotations

from pathlib import Path

import yaml

from promptship.domain.identity import SYSTEM
from promptship.services import Promptship, rollbacks
from tests.helpers import REQUESTER, case_results, push, slack, to_production

NAME = "customer-support"
DESIGN_KEYS = ["prompt_version", "model", "temperature", "updated_by"]
EXTRA_KEYS = ["max_tokens", "content_hash"]


async def test_the_export_has_the_documented_shape_and_the_loader_reads_it(
    core: Promptship, tmp_path: Path
) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.1.0", temperature=0.2)
    await core.promote(NAME, "1.1.0", "dev", slack("U07"))
    # staging by a request that waits for its tests: promptship promotes it when the run
    # passes, and the file names the person who asked, not promptship
    request = await core.request_promotion(
        NAME, "1.1.0", "staging", slack(REQUESTER), queue_tests=True
    )
    assert request.state == "open"
    run_id = await core.claim_validation_run("worker-1")
    assert run_id is not None
    await core.finish_validation_run(run_id, case_results(10), owner="worker-1")
    assert (await core.request(request.id)).state == "promoted"

    exported = await core.deployment_file()
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(exported, sort_keys=False, allow_unicode=True))

    # the loader from the deployment file's documentation, as it stands
    with open(path) as f:  # noqa: ASYNC230 (the loader as documented, verbatim)
        config = yaml.safe_load(f)
    assert config[NAME]["production"]["prompt_version"] == "1.0.0"
    assert config[NAME]["staging"]["prompt_version"] == "1.1.0"
    assert config[NAME]["dev"]["prompt_version"] == "1.1.0"

    assert list(config) == [NAME] and list(config[NAME]) == ["dev", "staging", "production"]
    for env, when in (
        ("dev", "updated_at"),
        ("staging", "promoted_at"),
        ("production", "promoted_at"),
    ):
        assert sorted(config[NAME][env]) == sorted([*DESIGN_KEYS, when, *EXTRA_KEYS]), env
    staging = config[NAME]["staging"]
    assert staging["model"] == "claude-sonnet-4-5" and staging["temperature"] == 0.2
    assert staging["updated_by"] == REQUESTER  # the requester, though promptship moved it
    assert config[NAME]["dev"]["updated_by"] == "U07"
    assert config[NAME]["production"]["updated_by"] == "U02"  # the approval that promoted it
    assert isinstance(staging["promoted_at"], str) and staging["promoted_at"].startswith("20")


async def test_a_system_revert_is_named_as_promptship_reverting_the_version(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.1.0")
    await to_production(core, version="1.1.0")
    # what a failing break-glass soak does: promptship rolls production back by its rules
    async with core.db.transaction() as session:
        await rollbacks.rollback(
            session, core.deps, NAME, "production", SYSTEM, frozenset({"oncall"}), "1.0.0",
            "break-glass soak failed: 30% diverged",
        )  # fmt: skip
    production = (await core.deployment_file())[NAME]["production"]
    assert production["prompt_version"] == "1.0.0"
    assert production["updated_by"] == "promptship (auto-revert of 1.1.0)"
    # a person's rollback names the person (never forward, to the auto-reverted 1.1.0)
    await push(core, version="1.2.0", system_prompt="v1.2")
    await to_production(core, version="1.2.0")
    await core.rollback(NAME, "production", slack("U03"), "1.0.0")
    assert (await core.deployment_file())[NAME]["production"]["updated_by"] == "U03"
