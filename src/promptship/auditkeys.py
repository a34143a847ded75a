"""The audit log's signing keys: ``PROMPTSHIP_AUDIT_KEY``, never stored in the database.

The variable holds one key or several, ``k2:secret2,k1:secret1``: the first signs new
events and checkpoints, every one listed verifies (so an old key stays listed after a
rotation until nothing signed with it needs checking). In SQLite trial mode with no
variable set, a key file beside the database (``<db>.audit-key``, mode 0600) is made on
first use; PostgreSQL refuses to write without a configured key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from promptship.errors import BadInput
from promptship.keyfiles import beside_sqlite, read_or_create

ENV_VAR = "PROMPTSHIP_AUDIT_KEY"
KEY_FILE_SUFFIX = ".audit-key"
KEYGEN_HINT = "make one with: promptship audit keygen (and set PROMPTSHIP_AUDIT_KEY to it)"
MIN_SECRET = 32
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class MissingAuditKey(BadInput):
    """No key to sign audit events with (PostgreSQL without PROMPTSHIP_AUDIT_KEY)."""


@dataclass(frozen=True)
class AuditKey:
    id: str
    secret: bytes

    def mac(self, message: bytes) -> str:
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never print the secret
        return f"AuditKey({self.id!r})"


@dataclass(frozen=True)
class AuditKeys:
    """Keys in order: the first signs, all verify."""

    keys: tuple[AuditKey, ...]
    #: where the keys came from (the variable, or the trial key file), for start-up messages
    source: str = ENV_VAR

    @property
    def signer(self) -> AuditKey:
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.keys)

    def get(self, key_id: str) -> AuditKey | None:
        return next((k for k in self.keys if k.id == key_id), None)


def parse_keys(text: str, source: str = ENV_VAR) -> AuditKeys:
    """Parse ``id:secret[,id:secret…]``; a malformed list is refused, naming the entry."""
    keys: list[AuditKey] = []
    for number, entry in enumerate((e.strip() for e in text.split(",")), 1):
        if not entry:
            continue
        key_id, colon, secret = entry.partition(":")
        key_id, secret = key_id.strip(), secret.strip()
        if not colon or not _KEY_ID.fullmatch(key_id):
            raise BadInput(
                f"{source}: key {number} is not id:secret (the id is 1-32 letters, digits, "
                "'.', '_' or '-')",
                hint=KEYGEN_HINT,
            )
        if len(secret) < MIN_SECRET:
            raise BadInput(
                f"{source}: the secret of key {key_id!r} is shorter than {MIN_SECRET} characters",
                hint=KEYGEN_HINT,
            )
        if any(k.id == key_id for k in keys):
            raise BadInput(f"{source}: key id {key_id!r} is listed twice")
        keys.append(AuditKey(key_id, secret.encode("utf-8")))
    if not keys:
        raise BadInput(f"{source}: no key in it", hint=KEYGEN_HINT)
    return AuditKeys(tuple(keys), source)


def generate_key(key_id: str = "k1") -> str:
    """A fresh random key, ``id:<base64 of 32 random bytes>``."""
    if not _KEY_ID.fullmatch(key_id):
        raise BadInput(f"not a key id: {key_id!r}", hint="1-32 letters, digits, '.', '_' or '-'")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode('ascii')}"


def key_file_for(database_url: str) -> Path | None:
    """The trial key file beside a SQLite database file; None for other databases."""
    return beside_sqlite(database_url, KEY_FILE_SUFFIX)


def _load_or_create(path: Path) -> AuditKeys:
    return parse_keys(read_or_create(path, generate_key), source=str(path))


class Keyring:
    """The keys of one database, found when first needed (so a read-only look at a trial
    database makes no key file until something is signed or verified)."""

    def __init__(self, database_url: str, configured: AuditKeys | str | None) -> None:
        self.database_url = database_url
        self._configured = configured
        self._keys: AuditKeys | None = configured if isinstance(configured, AuditKeys) else None

    def keys(self) -> AuditKeys | None:
        """The keys, or None where there are none (PostgreSQL without the variable)."""
        if self._keys is None:
            if isinstance(self._configured, str) and self._configured.strip():
                self._keys = parse_keys(self._configured)
            else:
                path = key_file_for(self.database_url)
                if path is not None:
                    self._keys = _load_or_create(path)
        return self._keys

    def signer(self) -> AuditKey:
        keys = self.keys()
        if keys is None:
            raise MissingAuditKey(
                f"{ENV_VAR} is not set: promptship will not write audit events it cannot sign",
                hint=KEYGEN_HINT,
            )
        return keys.signer


def resolve(configured: str | None, database_url: str) -> AuditKeys:
    """The keys a process starts with, refusing to start without one outside SQLite trial
    mode (the error names the command that makes a key)."""
    keys = Keyring(database_url, configured).keys()
    if keys is None:
        raise MissingAuditKey(
            f"{ENV_VAR} is not set; it is required with PostgreSQL (only a SQLite trial "
            "database keeps its key in a file beside it)",
            hint=KEYGEN_HINT,
        )
    return keys
