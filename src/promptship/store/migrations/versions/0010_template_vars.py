"""Templates: the vars a traffic sample was rendered with, so a soak renders both versions
with them; and notes on a validation run (a setting the provider refused and we dropped).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("traffic_samples", sa.Column("vars", _json(), nullable=True))
    op.add_column("validation_runs", sa.Column("notes", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("validation_runs") as batch:
        batch.drop_column("notes")
    with op.batch_alter_table("traffic_samples") as batch:
        batch.drop_column("vars")
