"""Sign in with Slack (OpenID Connect) for the Slack double: an authorize page that signs
in whoever a test named, ``openid.connect.token`` and ``openid.connect.userInfo``."""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response


class OpenIdDouble:
    """Mixed into the Slack double; ``_init_openid`` sets its state."""

    _lock: threading.Lock
    _ts: itertools.count[int]

    def _init_openid(self, client_id: str, client_secret: str) -> None:
        #: the OAuth client Sign in with Slack accepts
        self.client_id = client_id
        self.client_secret = client_secret
        #: who the authorize page signs in: OpenID claims (None: answers access_denied)
        self._signing_in: dict[str, Any] | None = None
        #: code -> (claims, redirect_uri, nonce); access token -> claims
        self._codes: dict[str, tuple[dict[str, Any], str, str | None]] = {}
        self._access: dict[str, dict[str, Any]] = {}

    def sign_in_as(
        self,
        user: str,
        *,
        team: str = "T0001",
        name: str | None = None,
        email: str | None = None,
    ) -> None:
        """Whom the authorize page signs in from now on (a person of workspace ``team``)."""
        with self._lock:
            self._signing_in = {
                "sub": user,
                "https://slack.com/user_id": user,
                "https://slack.com/team_id": team,
                "name": name or user.lower(),
                "email": email or f"{user.lower()}@example.com",
                "email_verified": True,
            }

    def sign_in(
        self, client: httpx.Client, user: str, *, team: str = "T0001", **who: Any
    ) -> httpx.Response:
        """A browser's round trip through the console's sign-in as ``user``: ``/login`` →
        this double's authorize page → ``/auth/callback``; the callback's answer (a redirect
        with the session cookie, which ``client`` keeps). ``client`` follows no redirects."""
        self.sign_in_as(user, team=team, **who)
        login = client.get("/login")
        if login.status_code != 303:
            raise RuntimeError(f"/login answered {login.status_code}: {login.text[:200]}")
        back = httpx.get(login.headers["location"], follow_redirects=False)
        if back.status_code != 302:
            raise RuntimeError(f"the authorize page answered {back.status_code}: {back.text[:200]}")
        callback = urlsplit(back.headers["location"])
        return client.get(f"{callback.path}?{callback.query}")

    async def _authorize(self, request: Request) -> Response:
        """``GET /openid/connect/authorize``: the person signs in at once and is sent back."""
        params = request.query_params
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or not redirect_uri:
            return Response("invalid client_id or redirect_uri", status_code=400)
        if params.get("response_type") != "code" or "openid" not in params.get("scope", ""):
            return Response("invalid response_type or scope", status_code=400)
        back: dict[str, str] = {"state": params.get("state", "")}
        with self._lock:
            if self._signing_in is None:
                back["error"] = "access_denied"
            else:
                code = f"code-{next(self._ts)}-{secrets.token_hex(8)}"
                self._codes[code] = (dict(self._signing_in), redirect_uri, params.get("nonce"))
                back["code"] = code
        separator = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(back)}", status_code=302)

    def _openid(self, method: str, args: dict[str, Any], token: str) -> dict[str, Any]:
        if method == "openid.connect.token":
            if (args.get("client_id"), args.get("client_secret")) != (
                self.client_id,
                self.client_secret,
            ):
                return {"ok": False, "error": "invalid_client_id"}
            with self._lock:
                found = self._codes.pop(str(args.get("code") or ""), None)
                if found is None:
                    return {"ok": False, "error": "invalid_code"}
                claims, redirect_uri, nonce = found
                if args.get("redirect_uri") != redirect_uri:
                    return {"ok": False, "error": "bad_redirect_uri"}
                access = f"xoxp-{secrets.token_hex(12)}"
                self._access[access] = claims
            id_claims = {**claims, "iss": "https://slack.com", "aud": self.client_id}
            if nonce:
                id_claims["nonce"] = nonce
            return {
                "ok": True,
                "access_token": access,
                "token_type": "Bearer",
                "id_token": _unsigned_jwt(id_claims),
            }
        if method == "openid.connect.userInfo":
            with self._lock:
                person = self._access.get(token)
            if person is None:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, **person}
        return {"ok": False, "error": "unknown_method"}


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    """A JWT's shape (header.claims.signature) with a dummy signature: enough for a client
    that reads the claims of a token it got straight from Slack."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.double"
