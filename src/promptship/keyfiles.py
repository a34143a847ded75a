"""Secrets kept in a file beside a SQLite database (a trial install's audit key, session
secret): made once, mode 0600, by whichever process gets there first."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url


def beside_sqlite(database_url: str, suffix: str) -> Path | None:
    """``<database file><suffix>`` for a SQLite file database; None for other databases."""
    try:
        url = make_url(database_url)
    except Exception:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database + suffix)


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's text, stripped; the file is first written with ``make()`` (mode 0600,
    never over an existing one) when it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier, or by another process just now: read it below
    else:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(make() + "\n")
    return path.read_text(encoding="utf-8").strip()
