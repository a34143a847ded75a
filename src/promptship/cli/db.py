"""``promptship db``: the database schema."""

from __future__ import annotations

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, guard, out, settings

db_app = CommandGroup(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (serve does this on start)."""

    async def go() -> str | None:
        from promptship.store.db import Database

        db = Database(settings().database_url)
        try:
            await db.upgrade()
            return await db.current_revision()
        finally:
            await db.dispose()

    revision = guard(go)
    out.print(f"database at revision {revision}")
