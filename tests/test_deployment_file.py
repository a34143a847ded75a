"""The deployment file in its documented shape: ``{prompt: {environment: {prompt_version,
model, temperature, updated_by, promoted_at | updated_at}}}`` (plus max_tokens and
content_hash), naming the person who caused each move, and readable by the three-line
loader teams already use."""

from __future__ import annotations

from pathlib import Path

import yaml

from promptship.clock import ManualClock
from promptship.domain.identity import SYSTEM, Actor, Via
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship, rollbacks
from promptship.store.db import Database
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import AUTHOR, REQUESTER, case_results, push, service, slack, to_production

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


async def test_a_staging_request_completed_by_ci_names_its_requester(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    # CI records the tests of a version a person asked to promote: the person caused it
    await push(core, version="1.1.0", system_prompt="v1.1")
    ci = service("ci-github")
    running = await core.start_validation_run(NAME, "1.1.0", ci, 10)
    request = await core.request_promotion(NAME, "1.1.0", "staging", slack(REQUESTER))
    assert request.state == "open"
    await core.finish_validation_run(running.id, case_results(10), ci)
    assert (await core.request(request.id)).state == "promoted"
    assert (await core.deployment_file())[NAME]["staging"]["updated_by"] == REQUESTER


async def test_a_staging_request_completed_by_an_override_names_its_requester(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    # an approver accepts the regressions holding a request back: the requester's move still
    await push(core, version="1.2.0", system_prompt="v1.2")
    run = await core.start_validation_run(NAME, "1.2.0", slack("U05"), 10, owner="ci")
    held = await core.request_promotion(NAME, "1.2.0", "staging", slack("U05"))
    await core.finish_validation_run(
        run.id, case_results(10), regressions=["refund policy"], owner="ci"
    )
    assert (await core.request(held.id)).state == "open"
    seen = (await core.request(held.id)).evidence
    assert seen and seen.tests
    done = await core.override_request(
        held.id, slack("U01"), "the refund copy changed", run_id=seen.tests.run_id
    )
    assert done.state == "promoted"
    staging = (await core.deployment_file())[NAME]["staging"]
    assert (staging["prompt_version"], staging["updated_by"]) == ("1.2.0", "U05")


async def test_dev_following_a_push_ci_made_for_an_author_names_the_author_and_ci(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("environments: {dev: {follow_latest: true}}"), clock)
    on_behalf = Actor(REQUESTER, Via.TOKEN, proxy="ci-github")
    await core.push(parse_prompt(prompt_yaml(NAME, "1.0.0")), on_behalf)
    dev = (await core.deployment_file())[NAME]["dev"]
    assert (dev["prompt_version"], dev["updated_by"]) == ("1.0.0", f"{REQUESTER} (via ci-github)")
    await push(core, version="1.1.0", system_prompt="Be brief.")  # the author, in Slack
    assert (await core.deployment_file())[NAME]["dev"]["updated_by"] == AUTHOR
