"""Races, on SQLite and on PostgreSQL, through two ``Database`` objects ("replicas") that
share one store. Each replica has its own engine and pool, so the tasks below really do
reach the database at the same time; only the store's locks keep the outcome right."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from promptship.clock import ManualClock
from promptship.config import Policy
from promptship.errors import PromptshipError
from promptship.services import Promptship
from promptship.services.views import RequestView
from promptship.store.db import Database
from promptship.store.models import Approval, DeploymentHistory, OutboxMessage
from tests.helpers import REQUESTER, push, slack, to_staging


@pytest.fixture
async def replicas(
    db: Database, database_url: str, policy: Policy, clock: ManualClock
) -> AsyncIterator[tuple[Promptship, Promptship]]:
    second = Database(database_url)
    yield Promptship(db, policy, clock), Promptship(second, policy, clock)
    await second.dispose()


async def audit_actions(core: Promptship) -> Counter[str]:
    lines = [line async for line in core.export_audit("jsonl")]
    return Counter(json.loads(line)["action"] for line in "".join(lines).splitlines())


async def count(core: Promptship, model: type, *where: object) -> int:
    async with core.db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def production_request(core: Promptship) -> RequestView:
    await push(core)
    await to_staging(core)
    return await core.request_promotion("customer-support", "1.0.0", "production", slack(REQUESTER))


async def test_two_approvals_at_the_same_instant_promote_exactly_once(
    replicas: tuple[Promptship, Promptship],
) -> None:
    one, two = replicas
    rounds = 6
    for i in range(rounds):
        version = f"1.{i}.0"
        await push(one, version=version, system_prompt=f"You are support agent {i}.")
        await to_staging(one, version=version)
        request = await one.request_promotion(
            "customer-support", version, "production", slack(REQUESTER)
        )
        assert request.state == "open"

        first, second = await asyncio.gather(
            one.approve(request.id, slack("U01")), two.approve(request.id, slack("U02"))
        )

        assert first.recorded and second.recorded
        # exactly one of the two saw the last gate pass; the other saw the first approval
        assert sorted(len(o.request.approvers) for o in (first, second)) == [1, 2]
        final = await two.request(request.id)
        assert final.state == "promoted" and sorted(final.approvers) == ["U01", "U02"]
        [live] = [
            e
            for e in (await one.status("customer-support"))[0].environments
            if e.environment == "production"
        ]
        assert live.version == version

    moves = await count(one, DeploymentHistory, DeploymentHistory.environment == "production")
    assert moves == rounds
    actions = await audit_actions(one)
    assert actions["request.promoted"] == 2 * rounds  # staging and production, once each
    assert actions["request.approved"] == 2 * rounds
    promoted_notes = await count(one, OutboxMessage, OutboxMessage.topic == "request.promoted")
    assert promoted_notes == 2 * rounds
    verification = await two.verify_audit()
    assert verification.ok, verification.problems


async def test_fifty_identical_approvals_by_one_person_count_once(
    replicas: tuple[Promptship, Promptship],
) -> None:
    one, two = replicas
    request = await production_request(one)

    outcomes = await asyncio.gather(
        *((one if i % 2 else two).approve(request.id, slack("U01")) for i in range(50)),
        return_exceptions=True,
    )

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert not errors, errors
    assert sum(o.recorded for o in outcomes) == 1  # type: ignore[union-attr]
    assert await count(one, Approval, Approval.request_id == request.id) == 1
    final = await two.request(request.id)
    assert final.state == "open" and final.approvers == ["U01"]
    assert (await audit_actions(one))["request.approved"] == 1
    assert (await one.verify_audit()).ok

    done = await two.approve(request.id, slack("U02"))
    assert done.request.state == "promoted"


async def test_approve_and_reject_racing_close_the_request_one_way(
    replicas: tuple[Promptship, Promptship],
) -> None:
    one, two = replicas
    request = await production_request(one)
    await one.approve(request.id, slack("U01"))

    results = await asyncio.gather(
        one.approve(request.id, slack("U02")),
        two.reject(request.id, slack("U06"), "the tone is off"),
        return_exceptions=True,
    )

    final = await one.request(request.id)
    assert final.state in {"promoted", "rejected"}
    # whoever came second was told the request had closed; nothing crashed
    for result in results:
        if isinstance(result, BaseException):
            assert isinstance(result, PromptshipError), result
            assert final.state in str(result)
    production = await count(one, DeploymentHistory, DeploymentHistory.environment == "production")
    assert production == (1 if final.state == "promoted" else 0)
    assert (await two.verify_audit()).ok


async def test_concurrent_pushes_of_one_version_register_it_once(
    replicas: tuple[Promptship, Promptship],
) -> None:
    one, two = replicas
    await asyncio.gather(*(push(one if i % 2 else two) for i in range(10)))
    versions = await one.versions("customer-support")
    assert [v.version for v in versions] == ["1.0.0"]
    assert (await audit_actions(two))["version.registered"] == 1


async def test_concurrent_rollbacks_move_the_pointer_once_each(
    replicas: tuple[Promptship, Promptship],
) -> None:
    one, two = replicas
    for i, version in enumerate(("1.0.0", "1.1.0", "1.2.0")):
        await push(one, version=version, system_prompt=f"Agent {i}.")
        await to_staging(one, version=version)
        request = await one.request_promotion(
            "customer-support", version, "production", slack(REQUESTER)
        )
        await one.approve(request.id, slack("U01"))
        await one.approve(request.id, slack("U02"))

    results = await asyncio.gather(
        one.rollback("customer-support", "production", slack("U03")),
        two.rollback("customer-support", "production", slack("U01")),
    )

    # two rollbacks in a row walk back twice, never to the reverted version
    assert [(r.from_version, r.to_version) for r in results] in (
        [("1.2.0", "1.1.0"), ("1.1.0", "1.0.0")],
        [("1.1.0", "1.0.0"), ("1.2.0", "1.1.0")],
    )
    [live] = [
        e
        for e in (await two.status("customer-support"))[0].environments
        if e.environment == "production"
    ]
    assert live.version == "1.0.0"
    assert (await one.verify_audit()).ok
