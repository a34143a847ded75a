"""The database handle: engine, transactions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and every write transaction
starts with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing on a lock
upgrade. PostgreSQL serialises conflicting writers with row locks taken by the services.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from promptship.auditkeys import ENV_VAR as AUDIT_KEY_VAR
from promptship.auditkeys import AuditKeys, Keyring
from promptship.errors import BadInput, PromptshipError, Unavailable

MIGRATIONS = Path(__file__).parent / "migrations"
_READ_ONLY = "promptship_read_only"
SQLITE_POOL_SIZE = 4
#: where a session finds the audit keys (``session.info[AUDIT_KEYRING]``, a Keyring)
AUDIT_KEYRING = "promptship_audit_keyring"
#: pg_advisory_xact_lock key held while migrating ("promptsh" in ASCII)
MIGRATION_LOCK = 0x70726F6D70747368


#: seconds one database call may take: a query, a wait for a lock or for a pooled connection
DEFAULT_TIMEOUT = 30.0


def _sqlite_pragmas(timeout: float) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so "begin" below decides the mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def _sqlite_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(_READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _without_password(url: str) -> str:
    """``url`` with whatever stands between ``user:`` and the last ``@`` starred out (a
    password may hold ``@``), for an error about a URL too malformed to parse."""
    return re.sub(r"(//[^/@:]*):.*@", r"\1:***@", url)


def create_engine(url: str, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> AsyncEngine:
    """An engine for ``url`` (SQLite or PostgreSQL) whose every call gives up after
    ``timeout`` seconds: SQLite's busy timeout, PostgreSQL's command and connect timeouts,
    and the wait for a pooled connection."""
    try:
        parsed = make_url(url)
    except Exception:
        raise BadInput(
            f"PROMPTSHIP_DATABASE_URL is not a database URL: {_without_password(url)!r}",
            hint="e.g. sqlite+aiosqlite:///./promptship.db or postgresql+asyncpg://user@host/db",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        database = parsed.database or ""
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BadInput(
                    f"cannot create the folder of the SQLite database {database}: {exc.strerror}",
                    hint="check PROMPTSHIP_DATABASE_URL",
                ) from None
        if database and database != ":memory:":
            # SQLite runs one writer at a time and every connection is a thread of its own
            # competing for the GIL with the event loop: a few connections serve best, and
            # a burst of requests waits for one in the pool instead of starting threads.
            kwargs.setdefault("pool_size", SQLITE_POOL_SIZE)
            kwargs.setdefault("max_overflow", 0)
            kwargs.setdefault("pool_timeout", timeout)
        engine = create_async_engine(parsed, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(timeout))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_timeout", timeout)
        connect_args = {"command_timeout": timeout, "timeout": timeout}
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
        return create_async_engine(parsed, **kwargs)
    raise BadInput(
        f"unsupported database {parsed.get_backend_name()!r} in PROMPTSHIP_DATABASE_URL",
        hint="promptship runs on SQLite and PostgreSQL",
    )


class Database:
    """One engine and the two kinds of transaction the services use.

    ``audit_keys`` signs and verifies the audit log (parsed keys, or the text of
    ``PROMPTSHIP_AUDIT_KEY``); by default that variable, else for a SQLite file the trial
    key file beside it. Every session carries them in ``session.info[AUDIT_KEYRING]``.
    """

    def __init__(
        self,
        url: str,
        *,
        audit_keys: AuditKeys | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **engine_kwargs: Any,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.engine = create_engine(url, timeout, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self.keyring = Keyring(
            url, audit_keys if audit_keys is not None else os.environ.get(AUDIT_KEY_VAR)
        )
        info = {AUDIT_KEYRING: self.keyring}
        self._write = async_sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._read_engine = self.engine.execution_options(**{_READ_ONLY: True})
        self._read = async_sessionmaker(self._read_engine, expire_on_commit=False, info=info)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back on error.

        A PromptshipError marked ``keeps_changes`` commits before it propagates, so an
        operation can record that it failed closed (an expired request) and still refuse.
        """
        async with self._reachable(), self._write() as session:
            try:
                yield session
            except PromptshipError as exc:
                if exc.keeps_changes:
                    await session.commit()
                else:
                    await session.rollback()
                raise
            except BaseException:
                await session.rollback()
                raise
            else:
                await session.commit()

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (never takes SQLite's write lock)."""
        async with self._reachable(), self._read() as session:
            yield session

    @asynccontextmanager
    async def _reachable(self, connecting: bool = False) -> AsyncIterator[None]:
        """Turn the database being unreachable, or not answering within the timeout, into
        ``Unavailable`` naming where it is and why, so every surface renders it once. While
        ``connecting``, any driver error (a wrong password, no such database) counts."""
        try:
            yield
        except PromptshipError:
            raise
        except Exception as exc:
            reason = _unreachable_reason(exc, self.timeout, connecting)
            if reason is None:
                raise
            raise Unavailable(
                f"cannot reach the database at {self.location} ({reason})",
                hint="check PROMPTSHIP_DATABASE_URL and that the database is up",
            ) from exc

    @property
    def location(self) -> str:
        """host:port of a server, or the file of a SQLite database (no credentials)."""
        url = self.engine.url
        if self.is_sqlite:
            return url.database or ":memory:"
        return f"{url.host or 'localhost'}:{url.port or 5432}"

    async def dispose(self) -> None:
        await self.engine.dispose()

    # -- migrations ------------------------------------------------------------------------

    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (the newest by default)."""
        config = self._alembic_config()

        def run(connection: Connection) -> None:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with self._reachable(connecting=True), self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # replicas starting together migrate one after the other; the lock belongs
                # to this transaction, so it cannot outlive it on a pooled connection
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            await conn.run_sync(run)

    async def current_revision(self) -> str | None:
        def read(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        async with self._reachable(connecting=True):
            async with self._read_engine.connect() as conn:  # never waits for SQLite's writer
                return await conn.run_sync(read)

    def head_revision(self) -> str | None:
        return _head_revision()

    async def is_up_to_date(self) -> bool:
        return await self.current_revision() == self.head_revision()


@functools.cache
def _head_revision() -> str | None:
    """The newest migration this package ships: read (and its scripts compiled) once per
    process, not on every readiness probe."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def _unreachable_reason(exc: BaseException, timeout: float, connecting: bool) -> str | None:
    """The short reason ``exc`` means the database is out of reach, or None if it is some
    other failure (a bug, a constraint) that must not be disguised."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):
        return f"no free connection within {timeout:g} s"
    seen: BaseException | None = exc
    for _ in range(8):  # the driver's error, wrapped by SQLAlchemy's
        if seen is None:
            break
        if isinstance(seen, TimeoutError):
            return f"no answer within {timeout:g} s"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return f"unknown host: {seen.strerror}"
        if isinstance(seen, OSError):
            return seen.strerror or str(seen) or type(seen).__name__
        if "database is locked" in str(seen):  # SQLite's busy timeout ran out
            return f"locked by another writer for over {timeout:g} s"
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and (connecting or exc.connection_invalidated):
        return str(exc.orig).strip().splitlines()[0][:200] if exc.orig else type(exc).__name__
    return None


def run_sync(coro: Any) -> Any:
    """Run a coroutine from synchronous code (the CLI)."""
    return asyncio.run(coro)
