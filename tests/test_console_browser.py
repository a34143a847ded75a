"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against
the app served over HTTP with the Slack double signing people in. The page loads with no
console error (a CSP violation is one), updates itself when a rollback happens, and shows
what people wrote as text, never as markup that runs. A screenshot of every page visited
is kept under pytest's temporary directory.

Without a Chromium these tests skip, saying so; in CI (``CI=true``) they fail instead:
``.ci/run`` installs Debian's ``chromium``."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import prompt_yaml
from tests.console_helpers import SOAKING, cycle, soak_with_baseline
from tests.console_served import PROMPT, ServedConsole, roll_back, slack_double
from tests.helpers import pass_tests, push, slack, to_staging

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

#: where Debian's package puts it; else whatever ``chromium`` is on the PATH
CHROMIUM = "/usr/bin/chromium"
#: how soon a change shows on an open page
LIVE_WITHIN_MS = 2000
#: pages the crawl below visits at most
MAX_PAGES = 20
#: the text of a prompt's staging cell on the overview
STAGING_CELL = """name => {
    const heads = [...document.querySelectorAll('table.prompts thead th')];
    const column = heads.findIndex(th => th.textContent.trim() === 'staging');
    const row = [...document.querySelectorAll('table.prompts tbody tr')].find(
        tr => tr.querySelector('.prompt')?.textContent === name);
    return row ? row.cells[column].innerText.trim() : '';
}"""
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI the browser tests must run (.ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        _missing(f"no Chromium at {CHROMIUM} or on the PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield found
        finally:
            found.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedConsole]:
    with slack_double() as double, ServedConsole(tmp_path_factory.mktemp("db"), double) as found:
        yield found


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"\nbrowser screenshots: {path}")
    return path


class Visit:
    """A signed-in browser tab that records what went wrong: console errors (a CSP
    violation is reported as one), uncaught exceptions and any dialog (alert, confirm)."""

    def __init__(self, browser: Browser, served: ServedConsole, screens: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1200, "height": 800})
        self.page: Page = self.context.new_page()
        self.screens = screens
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._dialog)
        served.slack.sign_in_as("U0VIEW", name="Vera Viewer")
        self.page.goto(f"{served.url}/")  # → /login → Slack's authorize → /auth/callback → /
        assert urlsplit(self.page.url).path == "/", self.page.url
        assert "Vera Viewer" in self.page.inner_text("header")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def live(self) -> None:
        """Wait until the page's event stream is open (console.js says so on <html>)."""
        self.page.wait_for_selector("html[data-live=on]", timeout=10_000)

    def shot(self, name: str) -> Path:
        path = self.screens / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser: Browser, served: ServedConsole, screens: Path) -> Iterator[Visit]:
    found = Visit(browser, served, screens)
    try:
        yield found
    finally:
        found.close()


def test_the_overview_renders_with_no_console_error(visit: Visit) -> None:
    page = visit.page
    assert page.inner_text("h1") == "Prompts"
    visit.live()  # the script loaded and ran under the CSP, and the stream is open
    assert page.inner_text("#live").startswith("Live")
    visit.shot("overview")
    assert visit.errors == []


def test_the_overview_updates_live_when_a_rollback_happens(
    visit: Visit, served: ServedConsole
) -> None:
    async def two_in_staging(core: Any) -> None:
        for version in ("1.0.0", "1.1.0"):
            await push(core, PROMPT, version)
            await to_staging(core, PROMPT, version)

    served.run(two_in_staging)
    page = visit.page
    page.reload()
    visit.live()
    assert page.evaluate(STAGING_CELL, PROMPT).startswith("1.1.0")
    served.run(roll_back)
    started = time.monotonic()
    # the table is replaced with the fragment's, so the cell is looked up anew each time
    page.wait_for_function(
        f"name => ({STAGING_CELL})(name).startsWith('1.0.0')", arg=PROMPT, timeout=LIVE_WITHIN_MS
    )
    print(f"\nthe rollback showed after {time.monotonic() - started:.2f} s")
    visit.shot("overview-after-rollback")
    assert visit.errors == []


def test_what_people_wrote_renders_inert_on_every_page(visit: Visit, served: ServedConsole) -> None:
    async def hostile(core: Any) -> None:
        from promptship.domain.promptfile import parse_prompt

        tests = [{"input": HOSTILE, "expected": "ok", "type": "contains"}]
        spec = parse_prompt(prompt_yaml("hostile", "1.0.0", description=HOSTILE, tests=tests))
        await core.push(spec, slack("U09"))
        await pass_tests(core, "hostile", "1.0.0")

    served.run(hostile)
    page = visit.page
    page.reload()
    visit.live()
    # the description shows as the characters it is made of
    assert page.get_by_text(HOSTILE, exact=True).count() >= 1
    # every page the console links to, once each (the prompt's own pages show the test input)
    origin = visit.page.url.rsplit("/", 1)[0]
    seen: set[str] = set()
    queue = [page.url]
    while queue and len(seen) < MAX_PAGES:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        page.goto(url)
        visit.shot(f"page-{len(seen):02d}")
        for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
            link = href.split("#")[0]
            download = "/export." in link  # the audit export is a file, not a page
            if (
                link.startswith(origin)
                and "/login" not in link
                and not download
                and link not in seen
            ):
                queue.append(link)
    assert visit.dialogs == [], f"a dialog opened: {visit.dialogs}"
    assert visit.errors == []


def test_the_diff_page_highlights_the_changed_word(visit: Visit, served: ServedConsole) -> None:
    async def two(core: Any) -> None:
        await push(core, "diffed", "1.0.0", system_prompt="You are a helpful support agent.")
        await push(core, "diffed", "1.1.0", system_prompt="You are a patient support agent.")

    served.run(two)
    page = visit.page
    page.goto(f"{served.url}/prompts/diffed/diff/1.0.0/1.1.0")
    assert page.locator("table.diff td.old del").all_inner_texts() == ["helpful"]
    assert page.locator("table.diff td.new ins").all_inner_texts() == ["patient"]
    # the words around it are not marked, and the mark is visible (a background of its own)
    line = page.locator("table.diff tr.line-replace td.new").first.inner_text()
    assert line == "You are a patient support agent."
    for mark in ("td.old del", "td.new ins"):
        background = page.eval_on_selector(
            f"table.diff {mark}", "el => getComputedStyle(el).backgroundColor"
        )
        assert background not in ("rgba(0, 0, 0, 0)", "transparent"), mark
    visit.shot("diff")
    assert visit.errors == []


def test_the_soak_chart_has_one_point_per_settled_cycle(
    browser: Browser, screens: Path, tmp_path: Path
) -> None:
    from promptship.clock import ManualClock
    from promptship.services.soak_spec import CycleResult

    with slack_double() as double, ServedConsole(tmp_path, double, SOAKING) as soaking:

        async def settle(core: Any) -> int:
            from datetime import UTC, datetime

            from promptship.services import Promptship

            clock = ManualClock(datetime.now(UTC))
            timed = Promptship(core.db, core.policy, clock)
            soak_id = await soak_with_baseline(timed, clock)
            # cycle 1 passes at 5%, 2 is missed (every replica down), 3 has too little
            # traffic, 4 passes at 2.5%; 5 is still to come
            await cycle(timed, soak_id, 1, CycleResult(40, divergent=2))
            await cycle(timed, soak_id, 3, CycleResult(sample_size=0))
            await cycle(timed, soak_id, 4, CycleResult(40, divergent=1))
            return int(soak_id)

        soak_id = soaking.run(settle)
        visit = Visit(browser, soaking, screens)
        try:
            page = visit.page
            page.goto(f"{soaking.url}/soaks/{soak_id}")
            points = page.eval_on_selector_all(
                "svg.chart circle.point",
                """els => els.map(c => ({
                    title: c.querySelector('title').textContent,
                    x: c.getBBox().x, y: c.getBBox().y,
                    shown: c.getBoundingClientRect().width > 0}))""",
            )
            cycles = page.locator("table.cycles tbody tr").count()
            assert len(points) == cycles == 4
            assert [p["title"] for p in points] == [
                "cycle 1: passed, 5% divergent",
                "cycle 2: missed",
                "cycle 3: insufficient",
                "cycle 4: passed, 2% divergent",
            ]
            assert all(p["shown"] for p in points)
            xs = [p["x"] for p in points]
            assert xs == sorted(xs) and len(set(xs)) == 4  # one per cycle, in order
            # higher divergence is drawn higher; the cycles with none sit on the axis
            assert points[0]["y"] < points[3]["y"] < points[1]["y"] == points[2]["y"]
            # the line joins the measured cycles only
            joined = page.get_attribute("svg.chart polyline.series", "points") or ""
            assert len(joined.split()) == 2
            visit.shot("soak")
            assert visit.errors == []
        finally:
            visit.close()


def test_the_audit_filters_narrow_the_log_and_keep_to_the_older_pages(
    visit: Visit, served: ServedConsole
) -> None:
    async def events(core: Any) -> None:
        from datetime import UTC, datetime, timedelta

        from promptship.clock import ManualClock
        from promptship.services import audit

        clock = ManualClock(datetime(2026, 5, 1, 9, tzinfo=UTC))
        async with core.db.transaction() as session:
            for i in range(130):
                if i == 100:
                    clock.advance(timedelta(days=1))
                await audit.record(
                    session,
                    clock,
                    actor="U0AUDITA" if i % 2 else "U0AUDITB",
                    action="version.pushed",
                    prompt="audited-prompt",
                    version=f"1.0.{i}",
                )

    served.run(events)
    page = visit.page
    page.goto(f"{served.url}/audit")
    page.fill("input[name=prompt]", "audited-prompt")
    page.fill("input[name=actor]", "U0AUDITA")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert "actor=U0AUDITA" in page.url and "prompt=audited-prompt" in page.url
    who = page.locator("table.audit tbody tr td:nth-child(3)").all_inner_texts()
    assert len(who) == 65 and set(who) == {"U0AUDITA"}
    assert page.input_value("input[name=actor]") == "U0AUDITA"  # the form keeps the filter
    # a date range: only the second day's events, and the export link carries the filters
    page.fill("input[name=since]", "2026-05-02")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    versions = page.locator("table.audit tbody tr td:nth-child(6)").all_inner_texts()
    assert len(versions) == 15 and all(int(v.rsplit(".", 1)[1]) >= 100 for v in versions)
    export = page.get_attribute("a[href*='export.jsonl']", "href") or ""
    assert "since=2026-05-02" in export and "actor=U0AUDITA" in export
    visit.shot("audit-filtered")
    # without the date, two pages: the older one keeps the filters
    page.fill("input[name=since]", "")
    page.fill("input[name=actor]", "")
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert page.locator("table.audit tbody tr").count() == 100
    with page.expect_navigation():
        page.click("a.older")
    rest = page.locator("table.audit tbody tr td:nth-child(5)").all_inner_texts()
    assert len(rest) == 30 and set(rest) == {"audited-prompt"}
    with page.expect_navigation():
        page.click("form.filters a")  # Clear
    assert page.input_value("input[name=prompt]") == ""
    assert visit.errors == []
