"""The read-only web console: Sign in with Slack, then an overview of every prompt, open
request and running soak. Decisions stay in Slack, the CLI and the API.

Every link and redirect starts with ``PROMPTSHIP_PUBLIC_URL``'s path, so the console works
behind a reverse proxy that serves it under a prefix (and strips it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from promptship.config import Settings
from promptship.console.audit import audit_routes
from promptship.console.auth import SignIn
from promptship.console.common import nul_param
from promptship.console.live import LiveUpdates
from promptship.console.operations import operation_routes
from promptship.console.overview import overview
from promptship.console.pages import Pages, script, secured, stylesheet
from promptship.console.prompts import prompt_routes
from promptship.console.settings import ConsoleSettings
from promptship.domain.safe_load import nul_refusal
from promptship.errors import Unavailable
from promptship.services import Promptship
from promptship.services.overview import MAX_QUERY

if TYPE_CHECKING:
    from promptship.api import DeploymentWatcher

__all__ = ["ConsoleSettings", "console_routes"]


def _page_of(request: Request) -> dict[str, str]:
    """The overview page a request names: ``?q=`` (a name filter) and ``?after=`` (the
    last name of the page before)."""
    return {
        "q": request.query_params.get("q", ""),
        "after": request.query_params.get("after", "")[:MAX_QUERY],
    }


def console_routes(
    settings: Settings,
    core: Promptship,
    facts: Callable[[Request], Awaitable[Response]] | None = None,
    watcher: DeploymentWatcher | None = None,
    stopping: list[Callable[[], None]] | None = None,
) -> list[Route]:
    """The console's routes. ``facts`` answers ``GET /`` for scripts (``Accept:
    application/json``): the server's name, version and health, which need no session.
    With a ``watcher``, ``/events`` streams live updates; the function that ends those
    streams is appended to ``stopping``, for the server to call as it starts shutting down."""
    pages = Pages(ConsoleSettings.from_settings(settings))
    sign_in = SignIn(pages, core)

    async def home(request: Request) -> Response:
        accept = request.headers.get("accept", "")
        if facts is not None and "application/json" in accept and "text/html" not in accept:
            return secured(await facts(request))
        session = pages.session_of(request, core.clock.now())
        if session is None:
            return pages.redirect("login")
        named = nul_param(request)
        if named is not None:
            return pages.message("Bad request", nul_refusal(named), 400, session)
        try:
            found = await overview(core, **_page_of(request))
        except Unavailable as exc:  # the database is down or stalls: say so, in the layout
            return pages.message("Not available", exc.message, 503, session)
        return pages.render("overview.html", session=session, **found)

    async def overview_fragment(request: Request) -> Response:
        """The overview's content alone, which live updates swap in."""
        session = pages.session_of(request, core.clock.now())
        if session is None:
            return secured(PlainTextResponse("Sign in first: this part needs a session.", 401))
        named = nul_param(request)
        if named is not None:
            return secured(PlainTextResponse(nul_refusal(named), 400))
        try:
            found = await overview(core, **_page_of(request))
        except Unavailable as exc:
            return secured(PlainTextResponse(exc.message, 503))
        return pages.render("overview_body.html", session=session, **found)

    async def css(request: Request) -> Response:
        return secured(Response(stylesheet(), media_type="text/css"))

    async def js(request: Request) -> Response:
        return secured(Response(script(), media_type="text/javascript"))

    extra: list[Route] = []
    if watcher is not None:
        live = LiveUpdates(pages, core, watcher)
        extra.append(Route("/events", live.events, methods=["GET"]))
        if stopping is not None:
            stopping.append(live.close)
    return [
        Route("/", home, methods=["GET"]),
        Route("/fragments/overview", overview_fragment, methods=["GET"]),
        *extra,
        Route("/login", sign_in.login, methods=["GET"]),
        Route("/auth/callback", sign_in.callback, methods=["GET"]),
        Route("/logout", sign_in.logout, methods=["POST"]),
        Route("/static/console.css", css, methods=["GET"]),
        Route("/static/console.js", js, methods=["GET"]),
        *prompt_routes(pages, core),
        *operation_routes(pages, core),
        *audit_routes(pages, core),
    ]
