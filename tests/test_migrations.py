"""The Alembic chain builds exactly the schema the models declare, on both databases."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from promptship.store.db import Database
from promptship.store.models import Base


async def test_migrations_match_the_models(db: Database) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    assert await db.is_up_to_date()


@pytest.mark.postgres
async def test_replicas_migrating_a_fresh_postgres_together_do_not_collide(
    postgres_url: str,
) -> None:
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = make_url(postgres_url)
    name = f"{admin.database}_fresh"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = admin.set(database=name).render_as_string(hide_password=False)
    replicas = [Database(fresh) for _ in range(3)]
    try:
        await asyncio.gather(*(r.upgrade() for r in replicas))
        assert all([await r.is_up_to_date() for r in replicas])
    finally:
        for r in replicas:
            await r.dispose()
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await engine.dispose()
