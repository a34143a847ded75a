"""The console's pages beyond the overview: a prompt's timeline, a version with its latest
run's cases, a side-by-side diff with the changed words marked, a soak's chart, a request,
the audit log and the server's health; all behind the session, all escaping what people
wrote, a 404 page for what does not exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptship.clock import ManualClock
from promptship.console.textdiff import side_by_side
from promptship.domain.promptfile import parse_prompt
from promptship.services import Promptship
from promptship.services.soak_spec import CycleResult
from promptship.testing.slack_double import SlackDouble
from tests.conftest import prompt_yaml
from tests.console_helpers import (
    SOAKING,
    Console,
    between,
    cycle,
    rows,
    seed_timed,
    soak_with_baseline,
)
from tests.helpers import REQUESTER, push, slack, start_staging_soak


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
    # what Slack's "Full report" opens: every case that did not pass
    problems = console.client.get("/prompts/customer-support/1.0.0?show=problems").text
    assert [between(c, '<span class="state">', "</span>") for c in rows(problems, "cases")] == [
        "failed",
        "failed",
        "errored",
    ]
    assert "<strong>failed or errored (3)</strong>" in problems
    assert 'href="/prompts/customer-support/1.0.0?show=errored"' in failed
    own = '<script src="/static/console.js" defer></script>'  # the console's one script
    assert "<script" not in failed.replace(own, "")


def test_the_diff_marks_the_changed_word_side_by_side(console: Console) -> None:
    console.seed(two_versions)
    console.sign_in()
    page = console.client.get("/prompts/customer-support/diff/1.0.0/1.1.0")
    assert page.status_code == 200
    line = rows(page.text, "diff diff-template")[0]
    assert '<td class="old">You are a <del>helpful</del> support agent.</td>' in line
    assert '<td class="new">You are a <ins>patient</ins> support agent.</td>' in line
    settings = rows(page.text, "settings")
    assert settings == ["><td>temperature</td><td><del>0.7</del></td><td><ins>0.2</ins></td>"]
    # the case 1.1.0 swapped in reads against the one it replaced, the changed words marked
    [case] = rows(page.text, "diff diff-tests")
    assert "line-replace" in case and "&#39;<del>previous version</del>&#39;" in case
    assert "icontains: &#39;<ins>Where</ins> <ins>is</ins> <ins>my</ins>" in case
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
    shown = rows(page, "diff diff-template")
    assert "… 17 unchanged lines" in shown[0] and "… 16 unchanged lines" in shown[-1]
    assert len(shown) == 1 + 3 + 1 + 3 + 1
    assert "be <del>precise</del> about" in page and "be <ins>brief</ins> about" in page
    huge = console.client.get("/prompts/long/diff/2.0.0/2.1.0")
    assert huge.status_code == 200
    assert "too large to show here (5500 lines against 5500)" in huge.text


def test_the_soak_page_charts_each_settled_cycle_with_its_state(
    tmp_path: Path, slack_api: SlackDouble
) -> None:
    console = Console(tmp_path, slack_api, SOAKING)

    async def go(core: Promptship, clock: ManualClock) -> int:
        soak_id = await soak_with_baseline(core, clock)
        worst = [
            {
                "input": "<script>alert(1)</script>",
                "candidate": "Refunds take a week.",
                "baseline": "Refunds take 3 days.",
                "similarity": 0.41,
            }
        ]
        assert await cycle(core, soak_id, 1, CycleResult(40, divergent=2, worst=worst)) == "passed"
        # cycle 2 is passed over (every replica down); cycle 3 has too little traffic
        assert await cycle(core, soak_id, 3, CycleResult(sample_size=0)) == "insufficient"
        assert await cycle(core, soak_id, 4, CycleResult(40, divergent=1)) == "passed"
        return soak_id

    with console.client:
        soak_id = seed_timed(console, go)
        console.sign_in()
        page = console.client.get(f"/soaks/{soak_id}")
        assert page.status_code == 200
        svg = between(page.text, "<svg", "</svg>")
        points = svg.split("<circle")[1:]
        states = [between(p, 'class="point point-', '"') for p in points]
        assert states == ["passed", "missed", "insufficient", "passed"]
        assert "<title>cycle 1: passed, 5% divergent</title>" in svg
        assert "<title>cycle 2: missed</title>" in svg
        # the limit line, labelled, above the 5% point and below nothing
        limit_y = float(between(svg, 'class="limit" x1="48" y1="', '"'))
        first_y = float(between(points[0], 'cy="', '"'))
        axis_y = float(between(points[1], 'cy="', '"'))
        assert limit_y < first_y < axis_y and "limit 10%" in svg
        assert ">cycle</text>" in svg and "style=" not in page.text
        cycles = rows(page.text, "cycles")
        assert [between(c, '<span class="state">', "</span>") for c in cycles] == [
            "passed",
            "missed",
            "insufficient",
            "passed",
        ]
        worst = rows(page.text, "worst")
        assert len(worst) == 1 and "Refunds take a week." in worst[0]
        assert "Refunds take 3 days." in worst[0] and "<td>0.41</td>" in worst[0]
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in worst[0] and "<script>" not in page.text
        # the prompt page links to it; unknown soaks are a 404 page
        assert f'href="/soaks/{soak_id}"' in console.client.get("/prompts/customer-support").text
        for missing in ("/soaks/999", "/soaks/abc"):
            assert console.client.get(missing).status_code == 404


def test_the_request_page_shows_gates_decisions_timeline_and_where_to_act(
    tmp_path: Path, slack_api: SlackDouble
) -> None:
    console = Console(tmp_path, slack_api, SOAKING)

    async def go(core: Promptship, clock: ManualClock) -> int:
        await start_staging_soak(core, "customer-support", "1.0.0")
        request = await core.request_promotion(
            "customer-support", "1.0.0", "production", slack(REQUESTER), reason="<b>urgent</b>"
        )
        await core.approve(request.id, slack("U01"), "looks <i>fine</i>")
        return request.id

    with console.client:
        request_id = seed_timed(console, go)
        console.sign_in()
        page = console.client.get(f"/requests/{request_id}")
        assert page.status_code == 200
        text = page.text
        assert f"<code>req-{request_id}</code>" in text
        assert "/prompt approve req-" in text and "promptship approve req-" in text
        assert f"POST /v1/requests/{request_id}/approve" in text
        checks = between(text, '<ul class="checks">', "</ul>")
        assert "check-waiting" in checks and "<strong>soak</strong>" in checks
        decisions = between(text, '<ul class="decisions">', "</ul>")
        assert "<strong>approved</strong> by <code>U01</code>" in decisions
        assert "looks &lt;i&gt;fine&lt;/i&gt;" in decisions
        assert "&lt;b&gt;urgent&lt;/b&gt;" in text and "<b>urgent" not in text
        timeline = [between(r, "<td>", "</td>") for r in rows(text, "history")]
        assert len(timeline) >= 2 and timeline == sorted(timeline, key=int)
        overview = console.client.get("/").text
        assert f'href="/requests/{request_id}"' in overview
        assert console.client.get(f"/requests/req-{request_id}").status_code == 200
        assert console.client.get("/requests/4242").status_code == 404


def test_the_word_diff_stays_cheap_on_long_or_many_lines() -> None:
    one = side_by_side("keep this line\nold words here\n", "keep this line\nnew words here\n")
    assert [r.kind for r in one.rows] == ["equal", "replace"]
    assert one.rows[1].old.pieces == [("old", True), (" words here", False)]
    long = " ".join(["a"] * 300)
    whole = side_by_side(long, long + " b")
    assert whole.rows[0].new.pieces == [(long + " b", True)]  # over the words a line may have
    # past the page's word budget, the remaining changed lines are marked whole
    many_a = "\n".join(" ".join(["a"] * 60) + f" b {i}" for i in range(1000))
    many_b = "\n".join(" ".join(["a"] * 60) + f" c {i}" for i in range(1000))
    rows_ = side_by_side(many_a, many_b).rows
    assert rows_[0].new.pieces[1:] == [("c", True), (" 0", False)]
    assert rows_[-1].new.pieces == [(" ".join(["a"] * 60) + " c 999", True)]
