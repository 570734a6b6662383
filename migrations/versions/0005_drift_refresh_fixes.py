"""refresh_drift: numbers beyond double precision no longer break it; late
labels alone append a monitor row.

Revision ID: 0005_drift_refresh_fixes
Revises: 0004_drift_monitor
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0005_drift_refresh_fixes"
down_revision = "0004_drift_monitor"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0005_drift_refresh_fixes.up.sql",
                     sha256="9587184b888757ac33306f82ef6df66ade5aee1b9a0e2bdac360dd45d77e2d1a")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0005_drift_refresh_fixes.down.sql",
                     sha256="41778e2d33d2a6f4572d96138d0ceea0ec208525a0ce70dab391fcdb343e5f28")
