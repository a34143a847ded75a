"""Rollback, revert and archive through the services: where each goes back to, what it
refuses, and who may do it (the rest of the lifecycle table: test_lifecycle_services)."""

from __future__ import annotations

import pytest

from promptship.errors import Forbidden, GateRefused
from promptship.services import Promptship
from promptship.store.models import OutboxMessage
from tests.helpers import push, slack, to_production, to_staging
from tests.test_lifecycle_services import NAME, count, status_of

# -- rollback ------------------------------------------------------------------------------


async def test_rollback_to_the_previous_version(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_production(core, version="1.1.0")
    result = await core.rollback(NAME, "production", slack("U03"), reason="answers got rude")
    assert (result.from_version, result.to_version) == ("1.1.0", "1.0.0")
    assert await status_of(core, "1.1.0") == "reverted"
    assert await status_of(core, "1.0.0") == "production"
    env = {d.environment: d.version for d in (await core.status(NAME))[0].environments}
    assert env["production"] == "1.0.0"
    assert await count(core.db, OutboxMessage, OutboxMessage.topic == "deployment.rolled_back") == 1


async def test_rollback_twice_does_not_return_to_the_reverted_version(core: Promptship) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await push(core, version=version, system_prompt=f"v{version}")
        await to_production(core, version=version)
    await core.rollback(NAME, "production", slack("U03"))
    second = await core.rollback(NAME, "production", slack("U03"))
    assert (second.from_version, second.to_version) == ("1.1.0", "1.0.0")


async def test_rollback_to_a_named_version(core: Promptship) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await push(core, version=version, system_prompt=f"v{version}")
        await to_production(core, version=version)
    result = await core.rollback(NAME, "production", slack("U01"), to_version="1.0.0")
    assert (result.from_version, result.to_version) == ("1.2.0", "1.0.0")
    with pytest.raises(GateRefused, match="already active"):
        await core.rollback(NAME, "production", slack("U01"), to_version="1.0.0")


async def test_rollback_never_goes_forward_nor_back_to_a_rolled_back_version(
    core: Promptship,
) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await push(core, version=version, system_prompt=f"v{version}")
        await to_production(core, version=version)
    await core.rollback(NAME, "production", slack("U03"), to_version="1.0.0")
    for forward in ("1.1.0", "1.2.0"):  # newer than what runs, and 1.2.0 was rolled back
        with pytest.raises(GateRefused, match="no rollback target") as refused:
            await core.rollback(NAME, "production", slack("U01"), to_version=forward)
        assert "promote" in (refused.value.hint or "")
    [status] = await core.status(NAME)
    assert {d.environment: d.version for d in status.environments}["production"] == "1.0.0"
    with pytest.raises(GateRefused, match="no earlier version"):  # nothing older to go to
        await core.rollback(NAME, "production", slack("U03"))


async def test_rollback_to_a_version_that_never_ran_there_is_refused(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    await push(core, version="2.0.0", system_prompt="v2")
    with pytest.raises(GateRefused, match="never ran in production"):
        await core.rollback(NAME, "production", slack("U03"), to_version="2.0.0")


async def test_rollback_is_for_oncall_and_approvers(core: Promptship) -> None:
    await push(core)
    await to_production(core)
    with pytest.raises(Forbidden, match="only on-call or approvers"):
        await core.rollback(NAME, "production", slack("U08"))


async def test_rollback_with_nothing_earlier(core: Promptship) -> None:
    await push(core)
    with pytest.raises(GateRefused, match="nothing in production"):
        await core.rollback(NAME, "production", slack("U03"))
    await to_production(core)
    with pytest.raises(GateRefused, match="no earlier version in production"):
        await core.rollback(NAME, "production", slack("U03"))


async def test_staging_revert(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await to_staging(core, version="1.0.0")
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_staging(core, version="1.1.0")
    assert await status_of(core, "1.0.0") == "deprecated"
    result = await core.rollback(NAME, "staging", slack("U03"))
    assert result.to_version == "1.0.0"
    assert await status_of(core, "1.1.0") == "reverted"
    assert await status_of(core, "1.0.0") == "staging"


async def test_archive_only_retired_versions(core: Promptship) -> None:
    await push(core, version="1.0.0")
    await to_production(core, version="1.0.0")
    with pytest.raises(GateRefused, match="is production: it cannot move to archived"):
        await core.archive(NAME, "1.0.0", slack("U01"))
    await push(core, version="1.1.0", system_prompt="v1.1")
    await to_production(core, version="1.1.0")
    assert await core.archive(NAME, "1.0.0", slack("U01")) == "archived"
