"""SQLite mode is single-process: ``promptship serve`` holds an advisory lock file beside the
database (``<database>.serve.lock``) while it runs, and a second ``serve`` on the same file
refuses to start, before it binds its port."""

from __future__ import annotations

import os
import threading
from typing import ClassVar

from sqlalchemy.engine import make_url

from promptship.errors import Conflict


class SingleProcessLock:
    """The lock file beside one SQLite database; closing it (or the process ending) frees it.

    The lock is the process's: several apps in one process (tests, an embedding) share it,
    and it is freed when the last of them releases it."""

    #: lock file path → [file descriptor, how many holders in this process]
    _held: ClassVar[dict[str, list[int]]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = f"{database}.serve.lock"
        self._key = os.path.realpath(self.path)
        self._holding = False

    @classmethod
    def for_url(cls, url: str) -> SingleProcessLock | None:
        """The lock of a SQLite file database; None for PostgreSQL and in-memory SQLite."""
        parsed = make_url(url)
        name = parsed.database
        if not parsed.get_backend_name().startswith("sqlite") or not name or name == ":memory:":
            return None
        return cls(name)

    @property
    def held(self) -> bool:
        return self._holding

    def acquire(self) -> None:
        """Take the lock, or raise ``Conflict`` naming the process that holds it."""
        import fcntl

        with self._guard:
            if self._holding:
                return
            shared = self._held.get(self._key)
            if shared is not None:
                shared[1] += 1
                self._holding = True
                return
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Conflict(
                    f"SQLite mode is single-process: another promptship serve "
                    f"({self.holder() or 'pid unknown'}) uses {self.database}; run several "
                    "replicas on PostgreSQL (PROMPTSHIP_DATABASE_URL=postgresql+asyncpg://…)"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}".encode())
            self._held[self._key] = [fd, 1]
            self._holding = True

    def holder(self) -> str | None:
        """What the holder wrote in the lock file ("pid N"), if readable."""
        try:
            with open(self.path, encoding="utf-8") as file:
                return file.read().strip() or None
        except OSError:
            return None

    def release(self) -> None:
        with self._guard:
            if not self._holding:
                return
            self._holding = False
            shared = self._held[self._key]
            shared[1] -= 1
            if shared[1] == 0:
                del self._held[self._key]
                os.close(shared[0])  # closing drops the lock
