"""dev is a real environment: pointed at any registered version at once (no gates) by anyone
who may request, or following the newest push; served, listed and audited like the others."""

from __future__ import annotations

import pytest

from promptship.clock import ManualClock
from promptship.errors import BadInput, GateRefused, NotFound
from promptship.services import Promptship
from promptship.services.views import DeploymentMove
from promptship.store.db import Database
from tests.conftest import make_policy
from tests.helpers import AUTHOR, REQUESTER, local, push, service, slack, to_production, to_staging

NAME = "customer-support"


async def dev_of(core: Promptship) -> str | None:
    [status] = await core.status(NAME)
    return next((d.version for d in status.environments if d.environment == "dev"), None)


async def test_promote_to_dev_moves_it_at_once_without_gates_and_is_audited(
    core: Promptship,
) -> None:
    await push(core, version="1.0.0")
    await push(core, version="1.1.0")
    # a self-declared CLI user with no role and no test run: dev has no gates
    moved = await core.promote(NAME, "1.0.0", "dev", local(REQUESTER), "try the new tone")
    assert isinstance(moved, DeploymentMove)
    assert (moved.from_version, moved.to_version, moved.changed) == (None, "1.0.0", True)
    assert await dev_of(core) == "1.0.0"
    assert (await core.show(NAME, "1.0.0")).status == "draft"  # a pointer, not a status

    served = await core.runtime_prompt(NAME, "dev")
    assert (served.version, served.deployed_by) == ("1.0.0", REQUESTER)

    # a service (CI) may request, so it may move dev too; to any version, back or forth
    back = await core.promote(NAME, "1.1.0", "dev", service("ci-github"))
    assert isinstance(back, DeploymentMove) and back.from_version == "1.0.0"
    again = await core.promote(NAME, "1.1.0", "dev", slack("U07"))
    assert isinstance(again, DeploymentMove) and not again.changed  # nothing to do
    assert (await core.runtime_prompt(NAME, "dev")).revision == 2

    events = [e for e in (await core.history(NAME, "dev")).events]
    moves = [e for e in events if e.action == "deployment.changed"]
    assert [(e.version, e.actor, e.details["move"]) for e in moves] == [
        ("1.1.0", "ci-github", "point"),
        ("1.0.0", REQUESTER, "point"),
    ]
    assert moves[1].details["reason"] == "try the new tone"
    assert not [e for e in events if e.action == "version.status"]
    assert (await core.verify_audit()).ok


async def test_dev_keeps_the_status_of_a_version_that_runs_elsewhere(core: Promptship) -> None:
    await push(core)
    await to_staging(core)
    await core.promote(NAME, "1.0.0", "dev", slack(AUTHOR))
    [status] = await core.status(NAME)
    assert [(d.environment, d.version, d.status) for d in status.environments] == [
        ("dev", "1.0.0", "staging"),
        ("staging", "1.0.0", "staging"),
    ]
    # staging's promotion of a newer version replaces it there, not in dev
    await push(core, version="1.1.0")
    await to_staging(core, version="1.1.0")
    assert await dev_of(core) == "1.0.0"


async def test_dev_refuses_what_it_cannot_run_and_names_the_way(core: Promptship) -> None:
    await push(core)
    with pytest.raises(BadInput, match="dev takes no requests") as no_request:
        await core.request_promotion(NAME, "1.0.0", "dev", slack(REQUESTER))
    assert no_request.value.hint == f"promote {NAME} 1.0.0 dev"
    with pytest.raises(BadInput, match="no gates to roll back") as no_rollback:
        await core.rollback(NAME, "dev", slack("U03"))
    assert no_rollback.value.hint == f"promote {NAME} VERSION dev"
    with pytest.raises(NotFound, match="has no version 9.9.9"):
        await core.promote(NAME, "9.9.9", "dev", slack(REQUESTER))

    await push(core, version="1.1.0")
    await to_production(core, version="1.0.0")
    await to_production(core, version="1.1.0")
    await core.archive(NAME, "1.0.0", slack("U01"))
    with pytest.raises(GateRefused, match="1.0.0 is archived"):
        await core.promote(NAME, "1.0.0", "dev", slack(REQUESTER))


async def test_dev_follows_each_newest_push_when_the_policy_says_so(
    db: Database, clock: ManualClock
) -> None:
    core = Promptship(db, make_policy("environments: {dev: {follow_latest: true}}"), clock)
    await push(core, version="1.0.0")
    assert await dev_of(core) == "1.0.0"
    await push(core, version="1.1.0", system_prompt="Be brief.")
    assert await dev_of(core) == "1.1.0"
    served = await core.runtime_prompt(NAME, "dev")
    assert (served.system_prompt, served.deployed_by) == ("Be brief.", AUTHOR)
    await push(core, version="1.0.1", system_prompt="A patch of the old line.")
    assert await dev_of(core) == "1.1.0"  # an older line's patch does not move dev back
    await push(core, version="1.1.0", system_prompt="Be brief.")  # identical again: a no-op
    assert (await core.runtime_prompt(NAME, "dev")).revision == 2
    moves = [
        e.details["move"]
        for e in (await core.history(NAME, "dev")).events
        if e.action == "deployment.changed"
    ]
    assert moves == ["follow-latest", "follow-latest"]
    assert (await core.verify_audit()).ok


async def test_without_follow_latest_a_push_leaves_dev_alone(core: Promptship) -> None:
    await push(core)
    assert await dev_of(core) is None
