"""The ASGI app ``promptship serve`` runs: health checks now; Slack and the API mount here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from promptship.config import Policy, Settings
from promptship.services import Promptship
from promptship.store.db import Database

log = logging.getLogger("promptship.server")


def create_app(
    settings: Settings, policy: Policy | None = None, *, migrate: bool = True
) -> Starlette:
    """Build the app; the policy file is read (and refused if bad) before anything starts.

    With ``migrate`` (the default) the schema is brought up to date on start-up.
    """
    policy = policy or settings.policy()
    db = Database(settings.database_url)
    core = Promptship(db, policy)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if migrate:
            await db.upgrade()
        log.info("database at revision %s", await db.current_revision())
        try:
            yield
        finally:
            await db.dispose()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        problems = []
        try:
            if not await db.is_up_to_date():
                problems.append("database migrations not applied")
        except Exception as exc:
            problems.append(f"database unreachable: {type(exc).__name__}")
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz)],
        lifespan=lifespan,
    )
    app.state.core = core
    return app
