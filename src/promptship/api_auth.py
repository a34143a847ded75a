"""What every ``/v1`` route shares: problem documents, bearer tokens, who is acting.

A caller is known only by its bearer token: a token from ``PROMPTSHIP_API_TOKENS``
(``scope:service:secret``, a service) or one issued by promptship (a person or a service,
stored hashed). The token's scope decides what it may do (``identity.grants``); its subject
is who acts. A request that names someone else (``?author=``, ``X-Promptship-User``,
``"requester"``) is refused unless the token is an admin's, and then it acts on behalf of
the named person: the audit reads "admin on behalf of U01". A service's admin token does so
only to push as the commit's author. Nobody decides for someone else.

While no token is configured at all (none in the environment, no active stored token),
reads stay open and every write is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from promptship.domain.identity import Actor, Permission, Scope, Via, grants
from promptship.domain.safe_load import json_items_exceed, load_json, nul_path, nul_refusal
from promptship.errors import BadInput, Forbidden, PromptshipError
from promptship.services import Promptship
from promptship.services.tokens import EnvToken, TokenIdentity, digest

#: how long "are any tokens configured?" and an authenticated stored token are remembered
RECHECK_SECONDS = 5.0
#: stored tokens remembered at once; past this the memory starts afresh
_REMEMBERED = 1024
#: the header an admin token names the person it acts for with
ON_BEHALF_HEADER = "x-promptship-user"

Handler = Callable[[Request], Awaitable[Response]]


def problem(
    status: int, title: str, detail: str, kind: str = "about:blank", **extra: str
) -> JSONResponse:
    """An RFC 9457 problem document (``extra``: extension members such as ``hint``)."""
    return JSONResponse(
        {"type": kind, "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type="application/problem+json",
    )


class ApiProblem(Exception):
    """Answer the request with this problem document instead."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def from_error(exc: PromptshipError) -> JSONResponse:
    titles = {
        400: "Bad request",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict",
        503: "Service unavailable",
    }
    extra = {"hint": exc.hint} if exc.hint else {}
    return problem(
        exc.http_status,
        titles.get(exc.http_status, "Refused"),
        str(exc),
        f"urn:promptship:{exc.kind}",
        **extra,
    )


def _unauthorized(detail: str, challenge: str = "Bearer") -> ApiProblem:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = challenge
    return ApiProblem(response)


def _needs(permission: Permission) -> str:
    scopes = ", ".join(s.value for s in Scope if grants(s, permission))
    return f"this needs {permission.value} (scopes: {scopes})"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a token's identity, or nobody while no tokens are configured."""

    identity: TokenIdentity | None
    core: Promptship

    def actor(self, named: str | None = None, *, what: str = "act") -> Actor:
        """The acting identity: the token's own, or (admin tokens only) the person ``named``
        (a Slack user ID, or an outside identity mapped under ``identities:``), recorded as
        the token's subject acting on their behalf. A service's admin token acts for someone
        only when ``what`` is ``push`` (CI and the commit's author). Naming yourself is the
        same as not."""
        if self.identity is None:  # unreachable: only reads are anonymous
            raise Forbidden("send a bearer token to act")
        own = self.identity.actor()
        named = (named or "").strip()
        if not named or named == own.id:
            return own
        with contextlib.suppress(BadInput):
            if self.core.resolve_identity(named) == own.id:
                return own
        if not grants(self.identity.scope, Permission.ON_BEHALF):
            raise Forbidden(
                f"this token speaks for {own.describe()}; it cannot {what} as {named[:100]}",
                hint="leave the name out (the token says who you are), or use an admin token",
            )
        # CI pushes a commit as its author; asking, break-glass and cancelling for a person
        # need a person's admin token, so no service holds a person's standing
        if own.service and what != "push":
            raise Forbidden(
                f"{own.id} is a service: it acts for a person only as the author of a push, "
                f"so it cannot {what} as {named[:100]}",
                hint="leave the name out (the service acts as itself), or use a person's admin token",
            )
        return Actor(self.core.resolve_identity(named), Via.TOKEN, proxy=own.id)

    def deciding(self, named: str | None = None) -> Actor:
        """The token's own identity for a decision: nobody decides on someone else's behalf."""
        own = self.actor()
        if named and named.strip() and self.actor(named, what="decide") != own:
            raise Forbidden(
                f"decisions are made by the token's own person ({own.id}); "
                f"no one decides on behalf of {named.strip()[:100]}",
                hint="that person decides with their own token, or in Slack",
            )
        return own


def caller_of(request: Request) -> Caller:
    caller: Caller = request.state.caller
    return caller


class Authenticator:
    """Bearer tokens of ``PROMPTSHIP_API_TOKENS`` (parsed once, at start-up) and stored ones."""

    def __init__(
        self, core: Promptship, env_tokens: list[EnvToken], recheck: float = RECHECK_SECONDS
    ) -> None:
        self.core = core
        self.env_tokens = [(t, digest(t.secret)) for t in env_tokens]
        self.recheck = recheck
        self._configured: tuple[float, bool] | None = None
        self._stored: dict[str, tuple[float, TokenIdentity]] = {}

    async def configured(self) -> bool:
        """Whether the API requires tokens: env tokens, or an active stored token (asked
        of the store at most every ``recheck`` seconds)."""
        if self.env_tokens:
            return True
        now = time.monotonic()
        if self._configured is None or now - self._configured[0] >= self.recheck:
            self._configured = (now, await self.core.api_tokens_configured())
        return self._configured[1]

    async def identify(self, secret: str) -> TokenIdentity | None:
        wanted = digest(secret)
        for token, hashed in self.env_tokens:
            if hmac.compare_digest(hashed, wanted):
                return TokenIdentity(token.subject, True, token.scope, None)
        now = time.monotonic()
        remembered = self._stored.get(wanted)
        if remembered is not None and now - remembered[0] < self.recheck:
            return remembered[1]
        identity = await self.core.authenticate_token(secret)
        if identity is None:
            self._stored.pop(wanted, None)
            return None
        if len(self._stored) >= _REMEMBERED:
            self._stored.clear()
        self._stored[wanted] = (now, identity)
        self._configured = (now, True)
        return identity

    async def caller(self, request: Request, permission: Permission | None) -> Caller:
        """Who is calling, checked for ``permission`` (None: any valid token); an
        ApiProblem (401/403) otherwise."""
        kind, _, given = request.headers.get("authorization", "").partition(" ")
        given = given.strip()
        identity = None
        if kind.lower() == "bearer" and given and len(given) <= 512:
            identity = await self.identify(given)
        if identity is None:
            if await self.configured():
                if not given:
                    raise _unauthorized("send Authorization: Bearer <token>")
                raise _unauthorized(
                    "that token is not known, or it was revoked or it expired",
                    'Bearer error="invalid_token"',
                )
            if permission in (Permission.READ, Permission.FETCH):
                return Caller(None, self.core)
            raise ApiProblem(
                problem(
                    403,
                    "Forbidden",
                    "writes are off: no API tokens are configured "
                    "(PROMPTSHIP_API_TOKENS, or promptship token create)",
                )
            )
        if permission is not None and not grants(identity.scope, permission):
            raise ApiProblem(
                problem(
                    403,
                    "Forbidden",
                    f"this token's scope is {identity.scope.value}; {_needs(permission)}",
                )
            )
        return Caller(identity, self.core)

    def guard(self, permission: Permission | None, handler: Handler) -> Handler:
        """``handler`` behind the token check, with typed errors as problem documents;
        the caller is in ``request.state.caller``."""

        async def guarded(request: Request) -> Response:
            try:
                request.state.caller = await self.caller(request, permission)
                _refuse_nul_params(request)
                return await handler(request)
            except ApiProblem as exc:
                return exc.response
            except PromptshipError as exc:
                return from_error(exc)

        return guarded


def _refuse_nul_params(request: Request) -> None:
    """400 for a path or query parameter holding U+0000 (no name or filter can hold it)."""
    params = [*request.path_params.items(), *request.query_params.multi_items()]
    named = next((name for name, value in params if "\x00" in str(value)), None)
    if named is not None:
        raise ApiProblem(problem(400, "Bad request", nul_refusal(named)))


def dump(value: object) -> object:
    """A view, or a list of them, as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


# -- request bodies ---------------------------------------------------------------------


async def json_body(request: Request, max_items: int | None = None) -> object:
    """The JSON body; 400 when it is malformed or holds more than ``max_items`` lists,
    mappings and items (counted before parsing). Parsing runs off the event loop, so a large
    body never delays other requests (Slack's acks among them)."""
    raw = await request.body()  # its size is capped by promptship.limits.BodyLimits
    if max_items is not None and json_items_exceed(raw, max_items):
        raise ApiProblem(
            problem(
                400,
                "Bad body",
                f"the body holds more than {max_items:,} JSON lists, mappings and items; "
                "send it in smaller batches",
            )
        )
    if len(raw) <= _PARSE_INLINE_BYTES:
        return _document(raw or b"null")
    return await asyncio.to_thread(_document, raw)


def _document(raw: bytes) -> object:
    try:
        document = load_json(raw, "the request body")
    except BadInput as exc:
        raise ApiProblem(problem(400, "Bad JSON", str(exc))) from None
    # PostgreSQL text cannot hold U+0000: refused here, naming the field, not a 500 later
    where = nul_path(document) if b"\\u0000" in raw else None
    if where is not None:
        raise ApiProblem(problem(400, "Bad request", nul_refusal(where)))
    return document


#: bodies up to this size parse in microseconds: on the loop, not worth a thread hop
_PARSE_INLINE_BYTES = 16 * 1024


def field(document: object, key: str, required: bool = True) -> str | None:
    """A text field of a JSON object body; 400 when a required one is missing or not text."""
    value = document.get(key) if isinstance(document, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        wanted = "is required text" if required else "must be text when given"
        raise ApiProblem(problem(400, "Bad request", f"{key} {wanted}"))
    return value
