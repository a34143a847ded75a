"""Proxies: who pushed a version or asked for a promotion on behalf of its author or
requester (an admin token's holder), so that person cannot approve it either.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("prompt_versions", sa.Column("pushed_by", sa.String(length=255), nullable=True))
    op.add_column(
        "promotion_requests", sa.Column("requested_by", sa.String(length=255), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("promotion_requests") as batch:
        batch.drop_column("requested_by")
    with op.batch_alter_table("prompt_versions") as batch:
        batch.drop_column("pushed_by")
