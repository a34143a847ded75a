"""Rendering console pages: one Jinja2 environment with autoescaping (apart from the
sandbox prompt templates render in), the security headers every console response carries,
and the session a request signed in with."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from jinja2 import Environment, PackageLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from promptship.console.sessions import Signer
from promptship.console.settings import ConsoleSettings

SESSION_COOKIE = "promptship_session"
LOGIN_COOKIE = "promptship_login"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("promptship.console", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def stylesheet() -> bytes:
    return files("promptship.console").joinpath("static/console.css").read_bytes()


@cache
def script() -> bytes:
    """The console's one script (live updates); no inline script anywhere (the CSP)."""
    return files("promptship.console").joinpath("static/console.js").read_bytes()


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


@dataclass(frozen=True)
class Session:
    user: str
    name: str
    team: str
    sid: str


class Pages:
    """What every console route shares: its settings, the cookie signers, rendering."""

    def __init__(self, config: ConsoleSettings) -> None:
        self.config = config
        secret = config.secret or b""
        self.sessions = Signer(secret, "session")
        self.logins = Signer(secret, "login")

    def render(
        self,
        template: str,
        status: int = 200,
        session: Session | None = None,
        **context: Any,
    ) -> Response:
        html = (
            environment()
            .get_template(template)
            .render(
                base=self.config.base_path,
                session=session,
                csrf=self.sessions.token(session.sid) if session else None,
                **context,
            )
        )
        return secured(HTMLResponse(html, status_code=status))

    def message(
        self, title: str, text: str, status: int, session: Session | None = None
    ) -> Response:
        return self.render("message.html", status, session, title=title, text=text)

    def redirect(self, relative: str = "") -> Response:
        return secured(RedirectResponse(self.config.path(relative), status_code=303))

    def session_of(self, request: Request, now: Any) -> Session | None:
        if self.config.secret is None:
            return None
        data = self.sessions.read(request.cookies.get(SESSION_COOKIE), now)
        if data is None:
            return None
        try:
            return Session(str(data["u"]), str(data["n"]), str(data["t"]), str(data["sid"]))
        except KeyError:
            return None

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=self.config.base_path,
            secure=self.config.secure,
            httponly=True,
            samesite="lax",
        )

    def clear_cookie(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name,
            path=self.config.base_path,
            secure=self.config.secure,
            httponly=True,
            samesite="lax",
        )
