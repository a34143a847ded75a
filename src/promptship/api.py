"""The HTTP API under ``/v1`` (bearer tokens from ``PROMPTSHIP_API_TOKENS``; errors are RFC
9457 problem documents). It calls the same services as the CLI and the Slack bot."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promptship.errors import PromptshipError
from promptship.services import Promptship

MAX_BODY = 8 * 2**20

Handler = Callable[[Request], Awaitable[Response]]


def problem(status: int, title: str, detail: str, kind: str = "about:blank") -> JSONResponse:
    return JSONResponse(
        {"type": kind, "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def parse_tokens(raw: str | None) -> list[str]:
    return [t.strip() for t in (raw or "").split(",") if t.strip()]


def _authorised(request: Request, tokens: list[str]) -> JSONResponse | None:
    if not tokens:
        return problem(403, "Writes are off", "no PROMPTSHIP_API_TOKENS are configured")
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        response = problem(401, "Unauthorized", "send Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
        response = problem(401, "Unauthorized", "that token is not one of PROMPTSHIP_API_TOKENS")
        response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        return response
    return None


def routes(core: Promptship, tokens: list[str]) -> list[Route]:
    async def read_json(request: Request) -> Any:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise _Problem(problem(413, "Too large", f"the body is over {MAX_BODY // 2**20} MiB"))
        try:
            return json.loads(body or b"null")
        except json.JSONDecodeError as exc:
            raise _Problem(problem(400, "Bad JSON", f"{exc.msg} at position {exc.pos}")) from None

    async def traffic(request: Request) -> Response:
        refused = _authorised(request, tokens)
        if refused is not None:
            return refused
        try:
            document = await read_json(request)
        except _Problem as exc:
            return exc.response
        samples = document.get("samples") if isinstance(document, dict) else document
        if not isinstance(samples, list):
            return problem(400, "Bad body", 'send a JSON list of samples, or {"samples": [...]}')
        try:
            result = await core.ingest_traffic(samples)
        except PromptshipError as exc:
            return problem(exc.http_status, "Refused", str(exc), f"urn:promptship:{exc.kind}")
        return JSONResponse({"stored": result.stored, "pruned": result.pruned}, status_code=201)

    return [Route("/v1/traffic", traffic, methods=["POST"])]


class _Problem(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response
