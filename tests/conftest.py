"""Shared fixtures: a migrated database per test on SQLite, and on PostgreSQL when
``PROMPTSHIP_TEST_POSTGRES_URL`` is set (``.ci/run`` sets it to the local server)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from promptship.clock import ManualClock
from promptship.config import Policy, parse_policy
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.store.models import Base
from promptship.validation.scoring import Scorer, get_scorer

# A suite started in the background of a non-interactive shell (`scripts/stress-test.sh &`,
# some CI runners) inherits SIGINT ignored, and Python then leaves it ignored, in this process
# and in every child it starts: the tests of Ctrl-C would see nothing. Each test process
# (xdist worker) takes Ctrl-C the way a terminal delivers it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

POSTGRES_URL = os.environ.get("PROMPTSHIP_TEST_POSTGRES_URL")
#: the fixed audit key of test databases; set for the whole test process (and the servers
#: it starts) so every Database and Settings signs with it
TEST_AUDIT_KEY = "test:promptship-test-audit-key-0123456789abcdef"
os.environ["PROMPTSHIP_AUDIT_KEY"] = TEST_AUDIT_KEY
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
#: the suite runs in several processes at once (pytest-xdist): one torch thread each for the
#: scorer, so they do not fight over the cores (servers the tests start inherit it)
os.environ.setdefault("PROMPTSHIP_SCORER_THREADS", "1")
#: ``HYPOTHESIS_PROFILE=thorough``: many more (and new) random examples for the property
#: tests; the default profile keeps the suite quick
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
hypothesis_settings.register_profile("thorough", max_examples=1000)
hypothesis_settings.load_profile("thorough" if THOROUGH else "default")

TEST_POLICY = """
channel: C0PROMPTOPS
roles:
  approvers: [U01, U02, U06, S0GROUP]
  oncall: [U03]
  stakeholders: []
groups:
  S0GROUP: [U05]
environments:
  staging: {min_pass_rate: 0.8}
  production: {approvals: 2, soak: 0s}
breakglass: {approvals: 3, production_soak: 0s}
approval_expiry: 72h
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: the suite runs in parallel processes that take work from each other
    (pytest-xdist's worksteal), so it ends about when the busiest process does, and a long
    test started last would leave the others idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def make_policy(extra: str = "") -> Policy:
    """The test policy, with YAML lines appended to override keys."""
    import yaml

    base = yaml.safe_load(TEST_POLICY)
    for key, value in (yaml.safe_load(extra) or {}).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return parse_policy(yaml.safe_dump(base))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db = Database(f"sqlite+aiosqlite:///{path}")

    async def migrate() -> None:
        await db.upgrade()
        await db.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("PROMPTSHIP_TEST_POSTGRES_URL is not set")
    admin = make_url(POSTGRES_URL)
    name = f"promptship_test_{os.getpid()}"

    async def create() -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        await engine.dispose()
        db = Database(admin.set(database=name).render_as_string(hide_password=False))
        await db.upgrade()
        await db.dispose()

    async def drop() -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await engine.dispose()

    asyncio.run(create())
    yield admin.set(database=name).render_as_string(hide_password=False)
    asyncio.run(drop())


async def _truncate(db: Database) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "audit_head")
    async with db.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await conn.execute(text("UPDATE audit_head SET seq = 0, hash = :h"), {"h": "0" * 64})


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "promptship.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db_url(database_url: str) -> str:
    """The test database, empty (a PostgreSQL database is shared by the process's tests)."""
    if database_url.startswith("postgresql"):

        async def clean() -> None:
            database = Database(database_url)
            try:
                await _truncate(database)
            finally:
                await database.dispose()

        asyncio.run(clean())
    return database_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url, audit_keys=TEST_AUDIT_KEY)
    if database.dialect == "postgresql":
        await _truncate(database)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def scorer() -> Iterator[Scorer]:
    """The process-wide MiniLM scorer (the real model, offline, in its scorer process),
    shared by the suite; its process ends with the suite."""
    shared = get_scorer()
    yield shared
    shared.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def policy() -> Policy:
    return make_policy()


@pytest.fixture
def core(db: Database, policy: Policy, clock: ManualClock) -> Promptship:
    return Promptship(db, policy, clock)


def prompt_yaml(
    name: str = "customer-support",
    version: str = "1.0.0",
    system_prompt: str = "You are a helpful support agent.",
    **extra: Any,
) -> str:
    import yaml

    doc: dict[str, Any] = {
        "name": name,
        "version": version,
        "model": "claude-sonnet-4-5",
        "temperature": 0.7,
        "max_tokens": 500,
        "system_prompt": system_prompt,
        "tests": [
            {"input": "What is prompt versioning?", "expected": "versioning", "type": "contains"},
            {"input": "How do I roll back?", "expected": "previous version", "type": "icontains"},
        ],
    }
    doc.update(extra)
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture
def slack_api() -> Iterator[Any]:
    """The Slack double, answering Sign in with Slack for the console's client."""
    from tests.console_served import slack_double

    with slack_double() as double:
        yield double


@pytest.fixture
def console(tmp_path: Path, slack_api: Any) -> Iterator[Any]:
    """The console's app behind a TestClient, on a SQLite file of its own."""
    from tests.console_helpers import Console

    found = Console(tmp_path, slack_api)
    with found.client:
        yield found


@pytest.fixture(autouse=True)
def _fresh_cli_state() -> Iterator[None]:
    """The CLI keeps its settings, ``--as`` and ``--json`` in a module-level state for the
    length of one command; tests that invoke commands in-process start and end with none."""
    from promptship.cli.common import state

    state.settings, state.actor, state.as_json = None, None, False
    yield
    state.settings, state.actor, state.as_json = None, None, False
