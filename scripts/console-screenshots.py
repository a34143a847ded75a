"""The README's console screenshots: a small demo store (a prompt in each environment, a
soak running in staging with settled cycles, one missed, and an open request) served by the
real app, signed in through the Slack double, shot in headless Chromium (Playwright) at
1280x800: docs/images/console-overview.png and docs/images/console-soak.png.

    .venv/bin/python scripts/console-screenshots.py [--chromium /usr/bin/chromium]
"""

# ruff: noqa: E402

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from console import (  # benchmarks/console.py: the same demo soak, server and sign-in
    CLIENT_ID,
    CLIENT_SECRET,
    POLICY,
    TEAM,
    ConsoleProcess,
    soak_and_request,
)
from playwright.sync_api import sync_playwright

from promptship.config import parse_policy
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.slack_double import SlackDouble
from tests.helpers import push, to_production, to_staging

OUT = ROOT / "docs" / "images"


async def demo(db_url: str) -> None:
    db = Database(db_url)
    await db.upgrade()
    core = Promptship(db, parse_policy(POLICY.replace("soak: 10s", "soak: 0s")))
    try:
        await push(core, "customer-support", "1.0.0", description="Answers billing questions")
        await to_production(core, "customer-support", "1.0.0")
        await push(core, "customer-support", "1.1.0", description="Answers billing questions")
        await to_staging(core, "customer-support", "1.1.0")
        await push(core, "order-tracking", "2.0.0", description="Where is my parcel?")
        await to_production(core, "order-tracking", "2.0.0")
        await push(core, "refund-triage", "0.3.0", description="Sorts refund requests")
    finally:
        await db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        parser.error(f"no Chromium at {args.chromium} (apt-get install chromium, or --chromium)")
    db_url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'demo.db'}"
    asyncio.run(demo(db_url))
    soak_id, _ = asyncio.run(soak_and_request(db_url, parse_policy(POLICY), "faq-answers"))
    OUT.mkdir(parents=True, exist_ok=True)
    with SlackDouble(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as double:
        server = ConsoleProcess(db_url, double.api_url)
        try:
            double.sign_in_as("U0VIEW", team=TEAM, name="Vera Viewer")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{server.url}/")  # → /login → Slack → /auth/callback → /
                page.wait_for_selector("html[data-live=on]", timeout=10_000)
                page.screenshot(path=str(OUT / "console-overview.png"))
                page.goto(f"{server.url}/soaks/{soak_id}")
                page.screenshot(path=str(OUT / "console-soak.png"))
                browser.close()
        finally:
            server.close()
    for name in ("console-overview.png", "console-soak.png"):
        print(f"{OUT / name}: {(OUT / name).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
