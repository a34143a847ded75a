"""Outbox delivery: per-channel sender leases and the message each thread hangs under.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_channel_leases",
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("leased_by", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_outbox_channel_leases")),
    )
    op.create_table(
        "notification_threads",
        sa.Column("thread_key", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("thread_key", name=op.f("pk_notification_threads")),
    )


def downgrade() -> None:
    op.drop_table("notification_threads")
    op.drop_table("outbox_channel_leases")
