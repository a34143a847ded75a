"""Structured logs: one JSON object a line, with the request id of the HTTP request (or
Slack event) being handled, and secrets redacted from the message and any traceback.

Redaction covers the shapes of Slack tokens, promptship API tokens, Anthropic and OpenAI
keys and bearer headers, and the exact values of every secret setting, so a token that is
logged by accident (in an exception message, say) never reaches the log store.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id: ContextVar[str | None] = ContextVar("promptship_request_id", default=None)

REDACTED = "[redacted]"
PATTERNS = [
    re.compile(r"xox[abposr]-[A-Za-z0-9-]{6,}"),
    re.compile(r"xapp-[A-Za-z0-9-]{6,}"),
    re.compile(r"psk_[A-Za-z0-9_-]{20,}"),  # a promptship API token (its short prefix stays)
    re.compile(r"sk-ant-[A-Za-z0-9_-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"(?i)(bearer\s+)[^\s,;\"']+"),
    re.compile(r"(?i)(signing[_ -]?secret[\"'=:\s]+)[^\s,;\"']+"),
]
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")
RUNTIME_PATH = re.compile(r"/v1/prompts/[^/]+/environments/[^/]+")


class Redactor(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        for key in ("method", "path", "status", "ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["error"] = record.exc_text
        elif record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(
    secrets: Iterable[str] = (), level: str = "INFO", stream: Any = None
) -> logging.Handler:
    """Send every log record (promptship's, uvicorn's, the SDKs') through one JSON handler
    that redacts secrets. Returns the handler (tests attach a buffer)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel("WARNING")  # we log requests ourselves
    # APScheduler logs every tick of every job at INFO ("Running job", "executed
    # successfully"): most of a day's log, so only at DEBUG
    chatty = level.upper() == "DEBUG"
    logging.getLogger("apscheduler").setLevel("DEBUG" if chatty else "WARNING")
    return handler


class RequestIds:
    """ASGI middleware: a request id per request (the caller's ``X-Request-Id`` if sane),
    set for every log line made while handling it, echoed in the response, and one access
    log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("promptship.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if re.fullmatch(r"[A-Za-z0-9._-]{1,64}", given) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            path = scope.get("path", "")
            method = scope.get("method")
            # probes and apps fetching their prompt (many a second, often long-polls) are
            # routine: they log at debug unless they failed
            routine = path in QUIET_PATHS or (
                method == "GET" and status < 400 and RUNTIME_PATH.fullmatch(path) is not None
            )
            level = logging.DEBUG if routine else logging.INFO
            if self.log.isEnabledFor(level):
                self._access(level, method, path, status, started)
            request_id.reset(token)

    def _access(self, level: int, method: Any, path: str, status: int, started: float) -> None:
        self.log.log(
            level,
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
