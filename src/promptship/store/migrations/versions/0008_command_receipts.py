"""Replay-safe commands: fingerprints of non-idempotent slash commands, kept 5 minutes;
and the attempt count of validation runs, so an interrupted run is re-queued once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "command_receipts",
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_command_receipts")),
    )
    op.create_index(
        op.f("ix_command_receipts_expires_at"), "command_receipts", ["expires_at"], unique=False
    )
    op.add_column(
        "validation_runs",
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("validation_runs") as batch:
        batch.drop_column("attempts")
    op.drop_index(op.f("ix_command_receipts_expires_at"), table_name="command_receipts")
    op.drop_table("command_receipts")
