"""The console's pages beyond the overview: a prompt's timeline, a version with its latest
run's cases, a side-by-side diff with the changed words marked, a soak's chart, a request,
the audit log and the server's health; all behind the session, all escaping what people
wrote, a 404 page for what does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.testing.slack_double import SlackDouble
from tests.conftest import prompt_yaml
from tests.console_helpers import Console
from tests.helpers import REQUESTER, push, slack


@pytest.fixture
def slack_api() -> Iterator[SlackDouble]:
    with SlackDouble(client_id="1000.2000", client_secret="oidc-secret-0123") as double:
        yield double


@pytest.fixture
def console(tmp_path: Path, slack_api: SlackDouble) -> Iterator[Console]:
    found = Console(tmp_path, slack_api)
    with found.client:
        yield found


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def rows(html: str, table: str) -> list[str]:
    body = between(html, f'<table class="{table}">', "</table>")
    return [r.split("</tr>", 1)[0] for r in body.split("<tr")[2:]]


async def two_versions(core: Promptship) -> None:
    await push(core, "customer-support", "1.0.0")
    spec = parse_prompt(
        prompt_yaml(
            "customer-support",
            "1.1.0",
            system_prompt="You are a patient support agent.",
            temperature=0.2,
            tests=[
                {
                    "input": "What is prompt versioning?",
                    "expected": "versioning",
                    "type": "contains",
                },
                {"input": "Where is my refund?", "expected": "refund", "type": "icontains"},
            ],
        )
    )
    await core.push(spec, slack("U0AUTHOR"))


def test_pages_need_a_session_and_unknown_names_are_a_404_page(console: Console) -> None:
    console.seed(two_versions)
    for path in (
        "/prompts/customer-support",
        "/prompts/customer-support/1.0.0",
        "/prompts/customer-support/diff/1.0.0/1.1.0",
    ):
        gone = console.client.get(path)
        assert gone.status_code == 303 and gone.headers["location"] == "/login", path
    console.sign_in()
    for path, says in (
        ("/prompts/no-such-prompt", "no prompt named &#39;no-such-prompt&#39;"),
        ("/prompts/customer-support/9.9.9", "9.9.9"),
        ("/prompts/customer-support/diff/1.0.0/9.9.9", "9.9.9"),
        ("/prompts/" + "x" * 300, "too long"),
    ):
        page = console.client.get(path)
        assert page.status_code == 404, (path, page.text)
        assert "<h1>Not found</h1>" in page.text and says in page.text, path


def test_the_prompt_page_lists_versions_newest_first_and_where_they_run(
    console: Console,
) -> None:
    async def go(core: Promptship) -> None:
        await two_versions(core)
        await core.record_validation_run(
            "customer-support", "1.0.0", [{"input": "q", "passed": True}], slack(REQUESTER)
        )
        await core.request_promotion("customer-support", "1.0.0", "staging", slack(REQUESTER))

    console.seed(go)
    console.sign_in()
    overview = console.client.get("/").text
    assert 'href="/prompts/customer-support"' in overview
    page = console.client.get("/prompts/customer-support")
    assert page.status_code == 200
    versions = rows(page.text, "versions")
    assert [between(r, "<code>", "</code>") for r in versions] == ["1.1.0", "1.0.0"]
    assert "<code>U0AUTHOR</code>" in versions[0]
    assert "staging" in versions[1] and "staging" not in versions[0]
    assert 'href="/prompts/customer-support/diff/1.0.0/1.1.0"' in versions[0]
    history = rows(page.text, "history")
    assert "request.promoted" in history[0] and "<td>staging</td>" in history[0]
    assert 'href="/requests/1"' in history[0]
    seqs = [int(between(r, "<td>", "</td>")) for r in history]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) > 2  # newest first


def test_the_version_page_shows_the_template_tests_and_filters_the_run(
    console: Console,
) -> None:
    async def go(core: Promptship) -> None:
        spec = parse_prompt(
            prompt_yaml(
                "customer-support",
                "1.0.0",
                system_prompt="Help {{ customer }} with {{ topic }}.",
                variables={"customer": None, "topic": "billing"},
                messages=[
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                ],
                tests=[
                    {
                        "input": "<script>alert(1)</script>",
                        "vars": {"customer": "Ann"},
                        "expected": "refund",
                        "type": "contains",
                    }
                ],
            )
        )
        await core.push(spec, slack("U09"))
        results: list[dict[str, Any]] = [
            {
                "input": "<script>alert(1)</script>",
                "vars": {"customer": "Ann"},
                "type": "contains",
                "expected": "refund",
                "got": "no idea",
                "passed": False,
                "detail": "'refund' not found",
            },
            {
                "input": "kind?",
                "type": "llm-rubric",
                "expected": "is kind",
                "got": "sure",
                "passed": False,
                "judge": {"reason": "The answer is curt, not kind."},
            },
            {"input": "ok?", "type": "contains", "expected": "ok", "got": "ok", "passed": True},
            {
                "input": "slow?",
                "type": "contains",
                "expected": "x",
                "got": None,
                "passed": False,
                "error": "timeout after 30s",
            },
        ]
        await core.record_validation_run("customer-support", "1.0.0", results, slack(REQUESTER))

    console.seed(go)
    console.sign_in()
    page = console.client.get("/prompts/customer-support/1.0.0")
    assert page.status_code == 200
    text = page.text
    assert "Help {{ customer }} with {{ topic }}." in text
    assert '<code>customer</code></td><td><span class="none">required</span>' in text
    assert "<code>topic</code></td><td><code>billing</code>" in text
    assert "Hello!" in text and "<code>customer=Ann</code>" in text
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "judge: The answer is curt, not kind." in text
    cases = rows(text, "cases")
    assert [between(c, '<span class="state">', "</span>") for c in cases] == [
        "failed",
        "failed",
        "passed",
        "errored",
    ]
    failed = console.client.get("/prompts/customer-support/1.0.0?show=failed").text
    shown = rows(failed, "cases")
    assert [between(c, '<span class="state">', "</span>") for c in shown] == ["failed", "failed"]
    assert "slow?" not in failed and "ok?" not in failed
    assert "&#39;refund&#39; not found" in failed
    errored = rows(console.client.get("/prompts/customer-support/1.0.0?show=errored").text, "cases")
    assert len(errored) == 1 and "timeout after 30s" in errored[0]
    # the filters are plain links, the current one in bold with its count
    assert "<strong>failed (2)</strong>" in failed
    assert 'href="/prompts/customer-support/1.0.0?show=errored"' in failed
    assert "<script" not in failed


def test_the_diff_marks_the_changed_word_side_by_side(console: Console) -> None:
    console.seed(two_versions)
    console.sign_in()
    page = console.client.get("/prompts/customer-support/diff/1.0.0/1.1.0")
    assert page.status_code == 200
    line = rows(page.text, "diff")[0]
    assert '<td class="old">You are a <del>helpful</del> support agent.</td>' in line
    assert '<td class="new">You are a <ins>patient</ins> support agent.</td>' in line
    settings = rows(page.text, "settings")
    assert settings == ["><td>temperature</td><td><del>0.7</del></td><td><ins>0.2</ins></td>"]
    tests = between(page.text, '<ul class="tests-diff">', "</ul>")
    assert "<del>− icontains: &#39;How do I roll back?&#39;" in tests
    assert "<ins>+ icontains: &#39;Where is my refund?&#39;" in tests
    same = console.client.get("/prompts/customer-support/diff/1.0.0/1.0.0").text
    assert "The two versions are the same." in same


def test_a_long_prompt_shows_context_and_a_huge_change_is_refused_by_size(
    console: Console,
) -> None:
    lines = [f"Rule {i}: be precise about item {i}." for i in range(40)]
    changed = list(lines)
    changed[20] = "Rule 20: be brief about item 20."

    async def go(core: Promptship) -> None:
        for version, text in (("1.0.0", lines), ("1.1.0", changed)):
            spec = parse_prompt(prompt_yaml("long", version, system_prompt="\n".join(text)))
            await core.push(spec, slack("U09"))
        huge = "\n".join(f"line {i} x" for i in range(5500))
        for version, text in (("2.0.0", huge), ("2.1.0", huge.replace("x", "y"))):
            spec = parse_prompt(prompt_yaml("long", version, system_prompt=text))
            await core.push(spec, slack("U09"))

    console.seed(go)
    console.sign_in()
    page = console.client.get("/prompts/long/diff/1.0.0/1.1.0").text
    shown = rows(page, "diff")
    assert "… 17 unchanged lines" in shown[0] and "… 16 unchanged lines" in shown[-1]
    assert len(shown) == 1 + 3 + 1 + 3 + 1
    assert "be <del>precise</del> about" in page and "be <ins>brief</ins> about" in page
    huge = console.client.get("/prompts/long/diff/2.0.0/2.1.0")
    assert huge.status_code == 200
    assert "too large to show here (5500 lines against 5500)" in huge.text
