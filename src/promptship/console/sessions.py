"""Signed cookies for the console: the session (who signed in) and the sign-in state.

A cookie is ``<base64url of JSON>.<hex HMAC-SHA256 of that text>`` under the session
secret, ``PROMPTSHIP_SESSION_SECRET``; on SQLite without it, a key file beside the database
(``<db>.session-key``, mode 0600) is made on first use, as the audit key file is. Anything
altered, unsigned, expired or over-long reads as no cookie at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from promptship.errors import BadInput
from promptship.keyfiles import beside_sqlite, read_or_create

ENV_VAR = "PROMPTSHIP_SESSION_SECRET"
KEY_FILE_SUFFIX = ".session-key"
MIN_SECRET = 32
#: a cookie longer than this is refused unread
MAX_COOKIE = 2048
SESSION_LIFETIME = timedelta(hours=12)
LOGIN_LIFETIME = timedelta(minutes=10)


def _load_or_create(path: Path) -> bytes:
    text = read_or_create(path, lambda: secrets.token_urlsafe(32))
    if len(text) < MIN_SECRET:
        raise BadInput(f"{path}: the session secret is shorter than {MIN_SECRET} characters")
    return text.encode("utf-8")


def resolve_secret(configured: str | None, database_url: str) -> bytes | None:
    """The session secret: the variable, else a SQLite database's key file, else None (no
    sign-in on PostgreSQL without the variable)."""
    if configured is not None and configured.strip():
        if len(configured.strip()) < MIN_SECRET:
            raise BadInput(
                f"{ENV_VAR} is shorter than {MIN_SECRET} characters",
                hint="make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
            )
        return configured.strip().encode("utf-8")
    path = beside_sqlite(database_url, KEY_FILE_SUFFIX)
    return _load_or_create(path) if path is not None else None


@dataclass(frozen=True)
class Signer:
    """Signs and reads cookies of one kind (the kind is signed too: a sign-in state cookie
    never reads as a session)."""

    secret: bytes
    kind: str

    def _mac(self, body: str) -> str:
        return hmac.new(self.secret, f"{self.kind}|{body}".encode(), hashlib.sha256).hexdigest()

    def sign(self, payload: dict[str, Any], expires: datetime) -> str:
        data = {**payload, "exp": int(expires.timestamp())}
        body = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
        text = body.decode("ascii").rstrip("=")
        return f"{text}.{self._mac(text)}"

    def read(self, cookie: str | None, now: datetime) -> dict[str, Any] | None:
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        text, dot, mac = cookie.rpartition(".")
        if not dot or not hmac.compare_digest(mac, self._mac(text)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int):
            return None
        if data["exp"] <= now.timestamp():
            return None
        return data

    def token(self, value: str) -> str:
        """A value derived from ``value`` that only this server can make (CSRF tokens)."""
        return self._mac("token:" + value)
