"""Bounds on what a request may cost before a handler sees it.

``BodyLimits`` caps every route's request body: a declared ``Content-Length`` over the cap
is refused at once, before a byte of the body is read; a body sent without one (chunked) is
counted as it streams and refused as soon as it passes the cap. Either way the answer is a
413 problem document and the connection is closed, so memory stays bounded by the cap
whatever the client sends. ``slack_guard`` then checks a Slack request's signature, and that
its body parses within bounds, before Bolt parses it (Bolt parses before it verifies).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from promptship.api import problem
from promptship.config import Settings
from promptship.domain.safe_load import load_json
from promptship.errors import BadInput

SLACK_PATH = "/slack/events"


def limits_from(settings: Settings) -> Callable[[str, str], int]:
    """The body cap in bytes of a request, by method and path, from the settings."""
    by_route = {
        ("POST", "/v1/prompts"): settings.max_body_push,
        ("POST", "/v1/deployments/apply"): settings.max_body_push,  # a file, like a prompt
        ("POST", "/v1/traffic"): settings.max_body_traffic,
    }

    def limit(method: str, path: str) -> int:
        path = path.rstrip("/") or "/"
        if path == SLACK_PATH:
            return settings.max_body_slack
        return by_route.get((method, path), settings.max_body_api)

    return limit


def _too_large(limit: int) -> Response:
    shown = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit:,} bytes"
    response = problem(413, "Content too large", f"the body of this request is over {shown}")
    response.headers["Connection"] = "close"  # the rest of the body is not read
    return response


class _BodyTooLarge(Exception):
    pass


class BodyLimits:
    """Pure ASGI middleware: a 413 problem document for a body over its route's cap, decided
    from ``Content-Length`` before reading, else while counting the streamed body."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _too_large(limit)(scope, receive, send)
                    raise _BodyTooLarge
            return message

        async def answer(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 was the answer; what the app says after it is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except Exception:
            if not refused:  # a handler's own failure, not the cut-off body
                raise


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
    return None


async def slack_guard(request: Request, signing_secret: str | None) -> Response | None:
    """Refuse a Slack request before Bolt parses it: 401 (Bolt's own answer) when the
    signature is wrong, a 400 problem document when a signed body would not parse within
    bounds. None when Bolt may have it."""
    raw = await request.body()  # bounded by BodyLimits; Starlette keeps it for Bolt
    if signing_secret is not None:
        timestamp = request.headers.get("x-slack-request-timestamp")
        signature = request.headers.get("x-slack-signature")
        if not _signed(raw, timestamp, signature, signing_secret):
            return JSONResponse({"error": "invalid request"}, status_code=401)
    try:
        _check_slack_body(raw, request.headers.get("content-type"))
    except BadInput as exc:
        return problem(400, "Bad request", str(exc))
    return None


def _signed(raw: bytes, timestamp: str | None, signature: str | None, secret: str) -> bool:
    """Slack's v0 signature, checked over the raw bytes within 5 minutes of its timestamp
    (slack_sdk's verifier decodes the body first: a signed body that is not UTF-8 would
    read as a forgery instead of the bad input it is)."""
    if not timestamp or not signature or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > 60 * 5:
        return False
    base = b"v0:" + timestamp.encode() + b":" + raw
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={digest}", signature)


def _check_slack_body(raw: bytes, content_type: str | None) -> None:
    """Parse the body as Bolt will, with promptship's bounds, so Bolt's parse cannot fail."""
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the Slack request body is not UTF-8") from None
    if not body:
        return
    if content_type == "application/json" or body.startswith("{"):
        document = load_json(body, "the Slack request body")
    elif "payload" in body:
        payload = dict(parse_qsl(body, keep_blank_values=True)).get("payload")
        if payload is None:
            return
        document = load_json(payload, "the Slack payload")
    else:
        return
    if not isinstance(document, dict):
        raise BadInput("a Slack request body is a JSON object")
