"""The console's overview as one bounded read, on both stores: prompts paged by keyset on
the name and filtered by a literal substring, descriptions, open requests with their gate
checklists, and running soaks."""

from __future__ import annotations

import pytest

from promptship.config import Policy
from promptship.services import Promptship
from tests.conftest import make_policy
from tests.helpers import REQUESTER, push, slack, start_staging_soak, to_staging

SOAKING = "environments: {production: {approvals: 2, soak: 5s, soak_interval: 1s}}"


@pytest.fixture
def policy() -> Policy:
    return make_policy(SOAKING)


async def test_prompts_are_paged_by_name_and_counted(core: Promptship) -> None:
    names = [f"p-{i}" for i in range(7)]
    for name in reversed(names):
        await push(core, name, "1.0.0", description=f"about {name}")
    await push(core, "p-3", "1.1.0", description="newer words")
    await push(core, "p-3", "1.0.1")  # a patch on the older line: not the latest

    seen: list[str] = []
    after: str | None = None
    befores = []
    while True:
        page = await core.overview_page(after=after, limit=3)
        assert page.matching == 7
        befores.append(page.before)
        seen += [s.name for s in page.prompts]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == names and befores == [0, 3, 6]
    third = {s.name: s for s in (await core.overview_page(limit=7)).prompts}["p-3"]
    assert (third.versions, third.latest_version) == (3, "1.1.0")
    described = (await core.overview_page(limit=7)).descriptions
    assert described["p-3"] == "newer words" and described["p-0"] == "about p-0"


async def test_the_filter_takes_wildcards_literally(core: Promptship) -> None:
    for name in ("a_b", "axb", "billing-faq"):
        await push(core, name, "1.0.0")
    assert [s.name for s in (await core.overview_page("_")).prompts] == ["a_b"]
    assert [s.name for s in (await core.overview_page("%")).prompts] == []
    found = await core.overview_page("  BILL ")
    assert [s.name for s in found.prompts] == ["billing-faq"] and found.matching == 1
    assert (await core.overview_page("x" * 10_000)).matching == 0


async def test_open_requests_and_running_soaks_are_listed_whatever_the_page(
    core: Promptship,
) -> None:
    soak_id = await start_staging_soak(core, "zz-agent", "1.0.0")
    await push(core, "aa-first", "1.0.0")
    await to_staging(core, "aa-first", "1.0.0")
    waiting = await core.request_promotion("aa-first", "1.0.0", "production", slack(REQUESTER))
    page = await core.overview_page(limit=1)
    assert [s.name for s in page.prompts] == ["aa-first"] and page.next_after == "aa-first"
    assert page.open_requests == 1 and [r.id for r in page.requests] == [waiting.id]
    assert "approvals" in {c.gate for c in page.requests[0].checks}
    first = await core.staging_soak_id("aa-first", "1.0.0")
    assert [(name, s.id, s.state) for name, s in page.soaks] == [
        ("aa-first", first, "running"),
        ("zz-agent", soak_id, "running"),
    ]


async def test_past_the_checked_few_open_requests_are_lines_oldest_first(
    core: Promptship, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptship.services import overview

    monkeypatch.setattr(overview, "MAX_CHECKED", 1)
    monkeypatch.setattr(overview, "MAX_REQUESTS", 3)
    opened = []
    for name in ("c-agent", "a-agent", "d-agent", "b-agent"):
        await push(core, name, "1.0.0")
        await to_staging(core, name, "1.0.0")
        opened.append(await core.request_promotion(name, "1.0.0", "production", slack(REQUESTER)))
    page = await core.overview_page()
    assert page.open_requests == 4
    assert [r.id for r in page.requests] == [opened[0].id] and page.requests[0].checks
    assert page.requests[0].evidence is None  # a list: the request's page has it
    assert [(r.prompt, r.code) for r in page.more_requests] == [
        ("a-agent", opened[1].code),
        ("d-agent", opened[2].code),
    ]
