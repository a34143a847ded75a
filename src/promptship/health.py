"""What a server says about itself: ``/readyz`` (for probes) and ``/about`` (for a person:
name, version, health and what runs where; ``/`` answers the same as JSON to scripts).

Neither needs a token: they show no prompts, people or requests.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, metadata

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from promptship import __version__
from promptship.errors import Unavailable
from promptship.store.db import Database

#: how long /readyz waits for the database before it answers 503 (probes time out at ~1-5 s)
READY_TIMEOUT = 2.0

#: the home page has no scripts, no images, no forms: only its own inline style
HOME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


async def readiness_problems(
    db: Database, scheduler_alive: Callable[[], bool] | None = None
) -> list[str]:
    """What keeps this server from being ready (empty when ready), within ``READY_TIMEOUT``
    even while the database stalls."""
    problems = []
    try:
        if not await asyncio.wait_for(db.is_up_to_date(), READY_TIMEOUT):
            problems.append("database migrations not applied")
    except TimeoutError:
        problems.append(f"database did not answer within {READY_TIMEOUT:g} s")
    except Unavailable as exc:
        problems.append(exc.message)
    except Exception as exc:
        problems.append(f"database unreachable: {type(exc).__name__}")
    if scheduler_alive is not None and not scheduler_alive():
        problems.append("the scheduler is not running")
    return problems


def readyz_for(
    db: Database, scheduler_alive: Callable[[], bool] | None = None
) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def readyz(request: Request) -> JSONResponse:
        problems = await readiness_problems(db, scheduler_alive)
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return readyz


@dataclass(frozen=True)
class About:
    """The facts the home page shows (the same in HTML and JSON)."""

    slack_mode: str | None  # None (off), "http" or "socket"
    workers: bool


def home_for(
    db: Database, about: About, scheduler_alive: Callable[[], bool] | None = None
) -> Callable[[Request], Awaitable[Response]]:
    async def home(request: Request) -> Response:
        problems = await readiness_problems(db, scheduler_alive)
        facts = _facts(about, problems)
        headers = {"Cache-Control": "no-store", "Vary": "Accept"}
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(facts, headers=headers)
        headers["Content-Security-Policy"] = HOME_CSP
        headers["X-Content-Type-Options"] = "nosniff"
        return HTMLResponse(_page(facts), headers=headers)

    return home


def _facts(about: About, problems: list[str]) -> dict[str, object]:
    slack = {None: "off", "http": "HTTP", "socket": "Socket Mode"}[about.slack_mode]
    endpoints = {
        "api": "/v1",
        "openapi": "/v1/openapi.json",
        "healthz": "/healthz",
        "readyz": "/readyz",
        "metrics": "/metrics",
    }
    if about.slack_mode == "http":
        endpoints["slack_events"] = "/slack/events"
    return {
        "name": "promptship",
        "version": _version(),
        "status": "unavailable" if problems else "ready",
        "problems": problems,
        "slack": slack,
        "workers": about.workers,
        "endpoints": endpoints,
        "docs": _docs_url(),
    }


def _version() -> str:
    try:
        return metadata("promptship")["Version"] or __version__
    except PackageNotFoundError:
        return __version__


def _docs_url() -> str | None:
    """The project's documentation address from the package's Project-URL metadata, if any
    (one labelled docs, documentation, homepage or source, in that order)."""
    try:
        entries = metadata("promptship").get_all("Project-URL") or []
    except PackageNotFoundError:
        return None
    urls: dict[str, str] = {}
    for entry in entries:
        label, _, url = entry.partition(",")
        urls[label.strip().lower()] = url.strip()
    for label in ("documentation", "docs", "homepage", "source", "repository"):
        if urls.get(label, "").startswith(("https://", "http://")):
            return urls[label]
    return None


def _page(facts: dict[str, object]) -> str:
    e = html.escape
    problems = facts["problems"]
    assert isinstance(problems, list)
    endpoints = facts["endpoints"]
    assert isinstance(endpoints, dict)
    if problems:
        health = "not ready: " + "; ".join(e(str(p)) for p in problems)
    else:
        health = "ready: the database answers and is migrated" + (
            ", the scheduler runs" if facts["workers"] else ""
        )
    docs = facts["docs"]
    readme = (
        f'<a href="{e(str(docs))}">the README</a>' if docs else "see README.md in the repository"
    )
    labels = {
        "api": "HTTP API",
        "openapi": "OpenAPI document",
        "healthz": "liveness",
        "readyz": "readiness",
        "metrics": "Prometheus metrics (a read token once tokens exist)",
        "slack_events": "Slack events (POST)",
    }
    rows = "\n".join(
        f'<li><a href="{e(path)}"><code>{e(path)}</code></a> — {e(labels[key])}</li>'
        if key not in ("api", "slack_events")  # a prefix and a POST endpoint: nothing to open
        else f"<li><code>{e(path)}</code> — {e(labels[key])}</li>"
        for key, path in endpoints.items()
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>promptship {e(str(facts["version"]))}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
       padding: 0 1rem; }}
.ready {{ color: #0a6b2b; }} .unavailable {{ color: #a3150f; }}
</style>
</head>
<body>
<h1>promptship <small>{e(str(facts["version"]))}</small></h1>
<p class="{e(str(facts["status"]))}"><strong>{health}</strong></p>
<p>Slack: <strong>{e(str(facts["slack"]))}</strong></p>
<ul>
{rows}
</ul>
<p>How to use it: {readme}.</p>
</body>
</html>
"""
