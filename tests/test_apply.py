"""``apply``: a committed deployment file becomes the desired state, through the same gates
as every other surface; each kind of difference, on both stores."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from promptship.errors import BadInput
from promptship.services import Promptship
from promptship.services import apply as apply_service
from promptship.services.views import ApplyResult
from tests.helpers import REQUESTER, local, pass_tests, push, service, slack, to_production

NAME = "customer-support"


def file_of(**envs: str) -> str:
    return yaml.safe_dump({NAME: {env: {"prompt_version": v} for env, v in envs.items()}})


def outcomes(result: ApplyResult) -> list[tuple[str, str, str]]:
    return [(c.environment, c.action, c.outcome) for c in result.changes]


async def live(core: Promptship) -> dict[str, str]:
    [status] = await core.status(NAME)
    return {d.environment: d.version for d in status.environments}


@pytest.fixture
async def released(core: Promptship) -> Promptship:
    """1.0.0 in production (and staging), 1.1.0 pushed with a passing run, 1.2.0 untested."""
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.1.0", system_prompt="Be brief.")
    await pass_tests(core, NAME, "1.1.0")
    await push(core, version="1.2.0", system_prompt="Be briefer.")
    return core


async def test_applying_the_export_changes_nothing(released: Promptship) -> None:
    core = released
    text = yaml.safe_dump(await core.deployment_file())
    result = await core.apply_deployments(text, "deployment.yaml", service("ci-github"))
    assert outcomes(result) == [
        ("staging", "none", "unchanged"),
        ("production", "none", "unchanged"),
    ]
    assert result.refused == 0


async def test_dev_moves_at_once_and_a_second_apply_is_a_no_op(released: Promptship) -> None:
    core = released
    text = file_of(dev="1.2.0")
    dry = await core.apply_deployments(text, "d.yaml", service("ci-github"), dry_run=True)
    assert outcomes(dry) == [("dev", "point", "planned")] and "dev" not in await live(core)
    done = await core.apply_deployments(text, "d.yaml", service("ci-github"))
    assert outcomes(done) == [("dev", "point", "done")]
    assert (await core.runtime_prompt(NAME, "dev")).version == "1.2.0"
    again = await core.apply_deployments(text, "d.yaml", service("ci-github"))
    assert outcomes(again) == [("dev", "none", "unchanged")]
    assert (await core.runtime_prompt(NAME, "dev")).revision == 1


async def test_a_newer_staging_version_starts_its_promotion(released: Promptship) -> None:
    core = released
    # 1.1.0 has a passing run: it promotes at once; 1.2.0 would wait for its tests
    result = await core.apply_deployments(file_of(staging="1.1.0"), "d.yaml", local(REQUESTER))
    assert outcomes(result) == [("staging", "promote", "done")]
    assert (await live(core))["staging"] == "1.1.0"
    assert (await core.deployment_file())[NAME]["staging"]["updated_by"] == REQUESTER

    untested = await core.apply_deployments(file_of(staging="1.2.0"), "d.yaml", local(REQUESTER))
    [change] = untested.changes
    assert (change.action, change.outcome) == ("promote", "opened")
    assert change.request and "tests queued" in (change.detail or "")
    assert (await live(core))["staging"] == "1.1.0"  # not before its tests pass
    again = await core.apply_deployments(file_of(staging="1.2.0"), "d.yaml", local(REQUESTER))
    assert outcomes(again) == [("staging", "promote", "waiting")]
    assert again.changes[0].request == change.request  # the same request, not another


async def test_two_applies_at_once_the_second_finds_it_done_and_reports_unchanged(
    released: Promptship, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of two CI jobs: the second plans, then the first makes every move, then the
    second acts on its (now stale) plan. Nothing is left for it to do: exit 0, not 1."""
    core = released
    text = file_of(dev="1.2.0", staging="1.1.0")
    real_plan = apply_service.plan
    first: list[ApplyResult] = []

    async def plan_then_the_other_apply_goes_first(*args: Any, **kwargs: Any) -> Any:
        changes = await real_plan(*args, **kwargs)
        if not first:
            first.append(ApplyResult(source="", dry_run=True, changes=[]))
            first[0] = await core.apply_deployments(text, "d.yaml", service("ci-github"))
        return changes

    monkeypatch.setattr(apply_service, "plan", plan_then_the_other_apply_goes_first)
    second = await core.apply_deployments(text, "d.yaml", service("ci-github"))
    assert outcomes(first[0]) == [("dev", "point", "done"), ("staging", "promote", "done")]
    assert outcomes(second) == [("dev", "point", "unchanged"), ("staging", "promote", "unchanged")]
    assert second.refused == 0
    assert all("runs" in (c.detail or "") for c in second.changes)
    assert await live(core) == {"dev": "1.2.0", "staging": "1.1.0", "production": "1.0.0"}


async def test_two_applies_really_at_once_make_each_move_once_and_refuse_nothing(
    released: Promptship,
) -> None:
    core = released
    text = file_of(dev="1.2.0", staging="1.1.0")
    both = await asyncio.gather(
        core.apply_deployments(text, "d.yaml", service("ci-github")),
        core.apply_deployments(text, "d.yaml", service("ci-gitlab")),
    )
    assert [r.refused for r in both] == [0, 0]
    for env in ("dev", "staging"):
        got = sorted(c.outcome for r in both for c in r.changes if c.environment == env)
        assert got == ["done", "unchanged"], (env, [outcomes(r) for r in both])
    assert await live(core) == {"dev": "1.2.0", "staging": "1.1.0", "production": "1.0.0"}


async def test_a_newer_production_version_opens_a_request_people_approve(
    released: Promptship,
) -> None:
    core = released
    text = file_of(staging="1.1.0", production="1.1.0")
    result = await core.apply_deployments(text, "deployment.yaml", service("ci-github"))
    assert outcomes(result) == [("staging", "promote", "done"), ("production", "request", "opened")]
    code = result.changes[1].request
    assert code and "0/2 approvals" in (result.changes[1].detail or "")
    request = await core.request(int(code.removeprefix("req-")))
    assert (request.requester, request.reason) == ("ci-github", "applied from deployment.yaml")
    assert (await live(core))["production"] == "1.0.0"  # people decide
    again = await core.apply_deployments(text, "deployment.yaml", service("ci-github"))
    assert outcomes(again) == [
        ("staging", "none", "unchanged"),
        ("production", "request", "waiting"),
    ]
    await core.approve(request.id, slack("U01"))
    await core.approve(request.id, slack("U02"))
    assert (await live(core))["production"] == "1.1.0"
    final = await core.apply_deployments(text, "deployment.yaml", service("ci-github"))
    assert {c.outcome for c in final.changes} == {"unchanged"}


async def test_a_flood_of_entries_is_refused_quickly_with_a_short_message(
    released: Promptship,
) -> None:
    core = released
    huge = yaml.safe_dump({f"nope-{i}": {"dev": {"prompt_version": "1.0.0"}} for i in range(1001)})
    with pytest.raises(BadInput) as too_many:
        await core.apply_deployments(huge, "d.yaml", service("ci-github"))
    assert "1,001 prompts; a deployment file holds at most 1,000" in too_many.value.message
    unknown = yaml.safe_dump(
        {f"nope-{i}": {"dev": {"prompt_version": "1.0.0"}} for i in range(1000)}
    )
    with pytest.raises(BadInput) as flood:
        await core.apply_deployments(unknown, "d.yaml", service("ci-github"))
    lines = flood.value.message.splitlines()
    assert len(lines) == 51 and lines[-1] == "… and 950 more"
    assert "no prompt named 'nope-0'" in lines[0] and len(flood.value.message) < 10_000


async def test_a_rejected_request_is_not_reopened_by_applying_the_file_again(
    released: Promptship,
) -> None:
    core = released
    text = file_of(staging="1.1.0", production="1.1.0")
    first = await core.apply_deployments(text, "deployment.yaml", service("ci-github"))
    code = first.changes[1].request
    assert code is not None
    await core.reject(int(code.removeprefix("req-")), slack("U01"), "tone is off")
    again = await core.apply_deployments(text, "deployment.yaml", service("ci-github"))
    assert outcomes(again) == [
        ("staging", "none", "unchanged"),
        ("production", "request", "refused"),
    ]
    detail = again.changes[1].detail or ""
    assert f"{code} for 1.1.0 was rejected by U01: tone is off" in detail
    assert f"promptship promote {NAME} 1.1.0 production" in detail
    assert again.changes[1].request == code
    assert (await core.request(int(code.removeprefix("req-")))).state == "rejected"
    assert (await live(core))["production"] == "1.0.0"


async def test_an_earlier_production_version_rolls_back_only_for_on_call_or_approvers(
    released: Promptship,
) -> None:
    core = released
    await to_production(core, version="1.1.0")
    text = file_of(production="1.0.0")
    # CI (a service) never decides: the entry is refused, with what a person can run
    by_ci = await core.apply_deployments(text, "d.yaml", service("ci-github"))
    [refused] = by_ci.changes
    assert (refused.action, refused.outcome, by_ci.refused) == ("rollback", "refused", 1)
    assert "ci-github is a service" in (refused.detail or "")
    assert f"/prompt rollback {NAME} production 1.0.0" in (refused.detail or "")
    by_shell = await core.apply_deployments(text, "d.yaml", local("U03"))  # self-declared
    assert by_shell.changes[0].outcome == "refused"
    assert "local CLI cannot roll back" in (by_shell.changes[0].detail or "")
    no_role = await core.apply_deployments(text, "d.yaml", slack(REQUESTER))
    assert "only on-call or approvers" in (no_role.changes[0].detail or "")
    assert (await live(core))["production"] == "1.1.0"

    done = await core.apply_deployments(text, "d.yaml", slack("U03"))  # on-call, via Slack
    assert outcomes(done) == [("production", "rollback", "done")]
    assert (await live(core))["production"] == "1.0.0"
    assert (await core.deployment_file())[NAME]["production"]["updated_by"] == "U03"
    again = await core.apply_deployments(text, "d.yaml", slack("U03"))
    assert outcomes(again) == [("production", "none", "unchanged")]


async def test_the_version_a_breakglass_replaced_is_a_rollback_target_whatever_its_number(
    released: Promptship,
) -> None:
    """An emergency fix numbered below production (1.0.0-hotfix.1 over 1.0.0): the file
    naming 1.0.0 again undoes the break-glass, as /prompt rollback would."""
    core = released
    await push(core, version="1.0.0-hotfix.1", system_prompt="Hotfix.")
    await pass_tests(core, NAME, "1.0.0-hotfix.1")
    request = await core.breakglass(NAME, "1.0.0-hotfix.1", slack(REQUESTER), "PII leak")
    for approver in ("U01", "U02", "U06"):
        await core.approve(request.id, slack(approver))
    assert (await live(core))["production"] == "1.0.0-hotfix.1"
    done = await core.apply_deployments(file_of(production="1.0.0"), "d.yaml", slack("U03"))
    assert outcomes(done) == [("production", "rollback", "done")]
    assert (await live(core))["production"] == "1.0.0"


async def test_a_rolled_back_newer_version_is_no_rollback_target(released: Promptship) -> None:
    """On-call rolled production 1.1.0 back to 1.0.0: applying ``production: 1.1.0`` (even by
    an approver) must not "roll back" forward to it with no approvals and no soak."""
    core = released
    await to_production(core, version="1.1.0")
    await core.rollback(NAME, "production", slack("U03"), reason="answers got rude")
    assert (await live(core))["production"] == "1.0.0"
    text = file_of(production="1.1.0")
    for who in (slack("U03"), slack("U01")):  # on-call, approver
        result = await core.apply_deployments(text, "d.yaml", who)
        [change] = result.changes
        assert (change.action, change.outcome) == ("rollback", "refused")
        assert "1.1.0 was rolled back, so it is no rollback target" in (change.detail or "")
        assert "push a fixed version" in (change.detail or "")
        assert (await live(core))["production"] == "1.0.0"


async def test_a_newer_version_that_ran_there_before_is_a_promotion_not_a_rollback(
    released: Promptship,
) -> None:
    core = released
    await core.apply_deployments(file_of(staging="1.1.0"), "d.yaml", local(REQUESTER))
    await core.apply_deployments(file_of(staging="1.0.0"), "d.yaml", slack("U03"))  # back
    assert (await live(core))["staging"] == "1.0.0"
    # 1.1.0 was replaced by a rollback: reverted; a newer one that merely ran there before
    # and was replaced (1.1.0 in production, staging rolled back beneath it) is a promotion
    forward = await core.apply_deployments(file_of(staging="1.1.0"), "d.yaml", slack("U03"))
    assert outcomes(forward) == [("staging", "rollback", "refused")]
    assert (await live(core))["staging"] == "1.0.0"


async def test_an_older_version_that_never_ran_there_is_refused(released: Promptship) -> None:
    core = released
    await core.apply_deployments(file_of(staging="1.1.0"), "d.yaml", local(REQUESTER))
    await push(core, version="0.9.0", system_prompt="An old line.")
    result = await core.apply_deployments(file_of(staging="0.9.0"), "d.yaml", slack("U03"))
    assert outcomes(result) == [("staging", "rollback", "refused")]
    assert "never ran in staging" in (result.changes[0].detail or "")


async def test_a_bad_file_is_refused_with_its_lines_and_changes_nothing(
    released: Promptship,
) -> None:
    core = released
    text = (
        f"{NAME}:\n"  # 1
        "  dev:\n"  # 2
        "    prompt_version: 1.2.0\n"  # 3
        "  staging:\n"  # 4
        "    version: 1.1.0\n"  # 5
        "  prod:\n"  # 6
        "    prompt_version: 1.1.0\n"  # 7
        "  production:\n"  # 8
        "    prompt_version: 1.1\n"  # 9
    )
    with pytest.raises(BadInput) as bad:
        await core.apply_deployments(text, "deployment.yaml", slack("U03"))
    message = str(bad.value)
    assert (
        f"deployment.yaml: line 5: {NAME}.staging.version: unknown key "
        "(did you mean prompt_version?)" in message
    )
    assert f"deployment.yaml: line 6: {NAME}.prod: unknown environment" in message
    assert (
        f"deployment.yaml: line 9: {NAME}.production.prompt_version: write the version "
        "as text in quotes (got 1.1)" in message
    )
    assert "dev" not in await live(core)  # the good entry did not go ahead alone
    with pytest.raises(BadInput, match="line 1: YAML aliases are not allowed"):
        await core.apply_deployments("a: &x 1\nb: *x\n", "deployment.yaml", slack("U03"))
    with pytest.raises(BadInput, match="expected a mapping of prompts"):
        await core.apply_deployments("- a list\n", "deployment.yaml", slack("U03"))


async def test_unknown_prompts_versions_and_foreign_settings_are_named_by_line(
    released: Promptship,
) -> None:
    core = released
    text = (
        "customer-suport:\n"  # 1
        "  dev: {prompt_version: 1.0.0}\n"  # 2
        f"{NAME}:\n"  # 3
        "  dev:\n"  # 4
        "    prompt_version: 1.0.0\n"  # 5
        "    model: claude-opus-4\n"  # 6
        "  staging:\n"  # 7
        "    prompt_version: 7.0.0\n"  # 8
    )
    with pytest.raises(BadInput) as bad:
        await core.apply_deployments(text, "deployment.yaml", slack("U03"))
    message = str(bad.value)
    assert (
        "deployment.yaml: line 1: no prompt named 'customer-suport' "
        f"(did you mean {NAME}?)" in message
    )
    assert f"deployment.yaml: line 8: {NAME} has no version 7.0.0" in message
    assert (
        f"deployment.yaml: line 6: {NAME}.dev.model is 'claude-opus-4', but {NAME} 1.0.0 has "
        "'claude-sonnet-4-5'" in message
    )
    assert "dev" not in await live(core)
