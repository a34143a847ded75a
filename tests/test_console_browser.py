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
