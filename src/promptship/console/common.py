"""What every page behind the session shares: the sign-in check, and a clear page (never a
traceback) for an unknown name, bad input or a database that does not answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from promptship.console.pages import Pages, Session
from promptship.domain.safe_load import nul_refusal
from promptship.errors import NotFound, PromptshipError, Unavailable
from promptship.services import Promptship

Handler = Callable[[Request, Session], Awaitable[Response]]

#: the longest path parameter taken (prompt names and versions are far shorter)
MAX_PARAM = 200


def guarded(
    pages: Pages, core: Promptship, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` for signed-in people only: others go to the sign-in page; what the
    services refuse is a page saying why, in the layout, with its status."""

    async def endpoint(request: Request) -> Response:
        session = pages.session_of(request, core.clock.now())
        if session is None:
            return pages.redirect("login")
        if any(len(str(v)) > MAX_PARAM for v in request.path_params.values()):
            return pages.message(
                "Not found", "No such page: the address is too long.", 404, session
            )
        named = nul_param(request)
        if named is not None:
            return pages.message("Bad request", nul_refusal(named), 400, session)
        try:
            return await handler(request, session)
        except NotFound as exc:
            return pages.message("Not found", exc.message, 404, session)
        except Unavailable as exc:
            return pages.message("Not available", exc.message, 503, session)
        except PromptshipError as exc:
            text = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
            return pages.message("Cannot show this", text, exc.http_status, session)

    return endpoint


def nul_param(request: Request) -> str | None:
    """The query or path parameter holding a NUL character (which PostgreSQL text cannot
    hold, so no filter can match it), or None."""
    params = [*request.query_params.multi_items(), *request.path_params.items()]
    return next((name for name, value in params if "\x00" in str(value)), None)


def not_found(pages: Pages, session: Session, text: str) -> Response:
    return pages.message("Not found", text, 404, session)
