"""The overview page as a person pages and filters it: fifty prompts at a time, a name
filter that is escaped where it is shown, links that carry the filter, and the live
fragment fetching the page the person is on."""

from __future__ import annotations

import re
from html import unescape

from promptship.services import Promptship
from promptship.services.overview import PAGE
from tests.console_helpers import Console
from tests.helpers import push


def names(html: str) -> list[str]:
    return re.findall(r'<strong class="prompt">([^<]*)</strong>', html)


def link(html: str, rel: str) -> str:
    return unescape(re.findall(rf'<a href="([^"]*)" rel="{rel}">', html)[0])


def test_the_overview_pages_through_every_prompt_by_name(console: Console) -> None:
    total = PAGE + 7

    async def many(core: Promptship) -> None:
        for i in range(total):
            await push(core, f"agent-{i:03d}", "1.0.0")

    console.seed(many)
    console.sign_in()
    first = console.client.get("/").text
    assert names(first) == [f"agent-{i:03d}" for i in range(PAGE)]
    assert f"1–{PAGE} of {total} prompts" in first
    second = console.client.get(link(first, "next")).text
    assert names(second) == [f"agent-{i:03d}" for i in range(PAGE, total)]
    assert f"{PAGE + 1}–{total} of {total} prompts" in second and 'rel="next"' not in second
    assert 'href="/">first page</a>' in second
    fragment = re.findall(r'data-fragment="([^"]*)"', second)[0]
    assert unescape(fragment) == f"/fragments/overview?after=agent-{PAGE - 1:03d}"
    assert names(console.client.get(unescape(fragment)).text) == names(second)
    past = console.client.get("/?after=zzz").text
    assert names(past) == [] and "No prompts after this point" in past


def test_the_name_filter_is_literal_escaped_and_kept_across_pages(console: Console) -> None:
    async def some(core: Promptship) -> None:
        for i in range(PAGE + 2):
            await push(core, f"billing-{i:03d}", "1.0.0")
        await push(core, "support", "1.0.0")

    console.seed(some)
    console.sign_in()
    found = console.client.get("/", params={"q": "BILLING"}).text
    assert len(names(found)) == PAGE and "support" not in names(found)
    assert f"of {PAGE + 2} prompts matching" in found
    following = link(found, "next")
    assert "q=BILLING" in following
    assert names(console.client.get(following).text) == ["billing-050", "billing-051"]
    hostile = console.client.get("/", params={"q": '"><script>alert(1)</script>'})
    assert hostile.status_code == 200
    assert "<script>alert(1)" not in hostile.text and "&lt;script&gt;" in hostile.text
    assert "No prompt's name holds" in hostile.text
    long = console.client.get("/", params={"q": "x" * 10_000})
    assert long.status_code == 200 and names(long.text) == []
