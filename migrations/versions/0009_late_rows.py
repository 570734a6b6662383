"""Late labels of rows that committed after the baseline with older ids
count towards the monitor's accuracy (drift_late_rows); the insert trigger
takes model locks in one order again.

Revision ID: 0009_late_rows
Revises: 0008_refresh_no_jit
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0009_late_rows"
down_revision = "0008_refresh_no_jit"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0009_late_rows.up.sql",
                     sha256="64e880b770d743031635142cb821cb251b61d0e0cd33f2c77a5c850e820be390")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0009_late_rows.down.sql",
                     sha256="ab1eea04edb89876d5e4d46dfc1f3eafc8c0cf819827f661b375f5607dfbfd20")
