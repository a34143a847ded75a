"""Sign in with Slack (OpenID Connect): ``/login`` sends the browser to Slack with a random
state and nonce kept in a short-lived signed cookie; ``/auth/callback`` checks the state,
exchanges the code (``openid.connect.token``), asks who signed in
(``openid.connect.userInfo``), and lets in members of the workspace the policy's
``console.viewers`` allow. ``POST /logout`` (with the page's CSRF token) signs out."""

from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from promptship.console.pages import LOGIN_COOKIE, SESSION_COOKIE, Pages, secured
from promptship.console.sessions import LOGIN_LIFETIME, SESSION_LIFETIME
from promptship.services import Promptship

log = logging.getLogger("promptship.console")

SCOPES = "openid profile email"
#: the longest code and state accepted from a callback
MAX_PARAM = 512
SLACK_TIMEOUT = 10.0
#: the sign-out form's body (its CSRF token) is read up to this many bytes
MAX_FORM = 1024


class SlackRefused(Exception):
    """Slack answered a sign-in call with an error, or not at all."""


def _claims(id_token: str) -> dict[str, Any]:
    """The claims of an ID token received straight from Slack over TLS (its signature is
    not what vouches for it here: the channel is)."""
    try:
        payload = id_token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class SignIn:
    def __init__(self, pages: Pages, core: Promptship) -> None:
        self.pages = pages
        self.core = core
        self.config = pages.config

    def _redirect_uri(self, request: Request) -> str:
        base = self.config.public_url or str(request.base_url)
        return base.rstrip("/") + "/auth/callback"

    def _unavailable(self) -> Response:
        return self.pages.message(
            "Sign-in is not set up",
            "The console signs people in with Slack. Set "
            + ", ".join(self.config.missing)
            + " on the server (see the README's Console section).",
            503,
        )

    async def login(self, request: Request) -> Response:
        if self.config.missing:
            return self._unavailable()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        query = urlencode(
            {
                "response_type": "code",
                "scope": SCOPES,
                "client_id": self.config.client_id,
                "redirect_uri": self._redirect_uri(request),
                "state": state,
                "nonce": nonce,
                "team": self.config.team_id,
            }
        )
        response = secured(RedirectResponse(f"{self.config.authorize_url}?{query}", 303))
        now = self.core.clock.now()
        cookie = self.pages.logins.sign({"s": state, "n": nonce}, now + LOGIN_LIFETIME)
        self.pages.set_cookie(response, LOGIN_COOKIE, cookie, int(LOGIN_LIFETIME.total_seconds()))
        return response

    async def callback(self, request: Request) -> Response:
        if self.config.missing:
            return self._unavailable()
        now = self.core.clock.now()
        started = self.pages.logins.read(request.cookies.get(LOGIN_COOKIE), now)
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if (
            started is None
            or not state
            or len(state) > MAX_PARAM
            or not hmac.compare_digest(state, str(started.get("s", "")))
        ):
            response = self.pages.message(
                "Sign-in not recognised",
                "This sign-in was not started here, or took longer than "
                f"{int(LOGIN_LIFETIME.total_seconds() // 60)} minutes. Sign in again.",
                400,
            )
            self.pages.clear_cookie(response, LOGIN_COOKIE)
            return response
        error = request.query_params.get("error")
        if error:
            return self._done(
                self.pages.message(
                    "Not signed in", f"Slack did not sign you in ({error[:100]}).", 403
                )
            )
        if not code or len(code) > MAX_PARAM:
            return self._done(
                self.pages.message("Sign-in failed", "Slack sent back no usable code.", 400)
            )
        try:
            identity = await self._identify(request, code, str(started.get("n", "")))
        except SlackRefused as exc:
            log.warning("console sign-in: %s", exc)
            return self._done(
                self.pages.message(
                    "Sign-in failed", f"Slack did not confirm who you are: {exc}.", 502
                )
            )
        user, name, team, email = identity
        if team != self.config.team_id:
            return self._done(
                self.pages.message(
                    "Not allowed",
                    "You signed in to another Slack workspace than the one promptship "
                    "works in. Sign in to that workspace.",
                    403,
                )
            )
        viewers = self.core.policy.console.viewers
        if viewers and not await self.core.roles.listed(viewers, user, email):
            return self._done(
                self.pages.message(
                    "Not allowed",
                    f"{name} ({user}) is not among the console's viewers; ask whoever keeps "
                    "promptship's policy to add you under console.viewers.",
                    403,
                )
            )
        response = self.pages.redirect()
        session = {"u": user, "n": name, "t": team, "sid": secrets.token_urlsafe(16)}
        cookie = self.pages.sessions.sign(session, now + SESSION_LIFETIME)
        lifetime = int(SESSION_LIFETIME.total_seconds())
        self.pages.set_cookie(response, SESSION_COOKIE, cookie, lifetime)
        log.info("console: %s signed in", user)
        return self._done(response)

    def _done(self, response: Response) -> Response:
        self.pages.clear_cookie(response, LOGIN_COOKIE)  # a state is good for one callback
        return response

    async def _identify(
        self, request: Request, code: str, nonce: str
    ) -> tuple[str, str, str, str | None]:
        async with httpx.AsyncClient(base_url=self.config.api_url, timeout=SLACK_TIMEOUT) as http:
            token = await self._call(
                http,
                "openid.connect.token",
                data={
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret,
                    "code": code,
                    "redirect_uri": self._redirect_uri(request),
                    "grant_type": "authorization_code",
                },
            )
            access = token.get("access_token")
            if not isinstance(access, str) or not access:
                raise SlackRefused("openid.connect.token answered no access token")
            id_token = token.get("id_token")
            if isinstance(id_token, str) and _claims(id_token).get("nonce") not in (None, nonce):
                raise SlackRefused("the ID token is for another sign-in (nonce)")
            info = await self._call(
                http, "openid.connect.userInfo", headers={"Authorization": f"Bearer {access}"}
            )
        user = info.get("https://slack.com/user_id") or info.get("sub")
        team = info.get("https://slack.com/team_id")
        if not isinstance(user, str) or not isinstance(team, str):
            raise SlackRefused("openid.connect.userInfo named no user and workspace")
        name = info.get("name") or info.get("given_name") or user
        email = info.get("email") if info.get("email_verified", True) else None
        return (
            user[:40],
            str(name)[:200],
            team[:40],
            str(email)[:254] if isinstance(email, str) else None,
        )

    async def _call(self, http: httpx.AsyncClient, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer = await http.post(method, **kwargs)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SlackRefused(f"{method}: {type(exc).__name__}") from None
        if not isinstance(body, dict) or not body.get("ok"):
            error = body.get("error") if isinstance(body, dict) else None
            raise SlackRefused(f"{method}: {error or f'HTTP {answer.status_code}'}")
        return body

    async def logout(self, request: Request) -> Response:
        session = self.pages.session_of(request, self.core.clock.now())
        if session is not None:
            body = await request.body()  # the form is url-encoded: one short field
            form = dict(parse_qsl(body[:MAX_FORM].decode("utf-8", "replace")))
            given = form.get("csrf", "")
            if not hmac.compare_digest(given, self.pages.sessions.token(session.sid)):
                return self.pages.message(
                    "Not signed out",
                    "The sign-out form was not this page's; use the Sign out button.",
                    400,
                    session,
                )
        response = self.pages.message("Signed out", "You are signed out of the console.", 200)
        self.pages.clear_cookie(response, SESSION_COOKIE)
        return response
