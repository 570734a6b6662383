"""At most one running event per model; cooldown and schedule_interval
bounded to 10 years.

Revision ID: 0010_one_running_bounds
Revises: 0009_late_rows
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0010_one_running_bounds"
down_revision = "0009_late_rows"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0010_one_running_bounds.up.sql",
                     sha256="6e3e67ac8874525a2a6d21532d9bdf6b415d88c5348b1620a234904400b0c00a")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0010_one_running_bounds.down.sql",
                     sha256="b81a7d941e2bd99066fb4a4bad463352dd7ec43214742aeb8fea53e4dcc2daad")
