"""The drift monitor: baselines, bins, the arrival inbox, refresh_drift(),
feature_drift; the insert path records arrivals.

Revision ID: 0004_drift_monitor
Revises: 0003_model_lock
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0004_drift_monitor"
down_revision = "0003_model_lock"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0004_drift_monitor.up.sql",
                     sha256="0197b1390b1d017c5b1e131943004a6287f38c278b59b88cdfabc29a0a1d4c34")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0004_drift_monitor.down.sql",
                     sha256="1f3538fed168a0d7e5d7db9d0b75d3edc5d429bda4a21201149da57ace11b0c7")
