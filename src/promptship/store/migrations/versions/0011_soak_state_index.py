"""An index on the soaks' state: the scheduler's every tick and the console's overview ask
for the running soaks, which are few among every soak ever run; without it a planner may
start from the prompts and scan them all.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_soak_runs_state", "soak_runs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_soak_runs_state", table_name="soak_runs")
