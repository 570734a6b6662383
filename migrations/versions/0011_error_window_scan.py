"""The rolling error window is read from training_data when it may have
risen, instead of kept per model and rewritten by every scored statement;
single-row INSERTs take a short path; drift_inbox loses its unused key.

Revision ID: 0011_error_window_scan
Revises: 0010_one_running_bounds
Create Date: 2026-11-26

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0011_error_window_scan"
down_revision = "0010_one_running_bounds"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0011_error_window_scan.up.sql",
                     sha256="aef14fd5b4f74bf72dc39f3789a3bd79c5db2a79c5f57e1591e5cad25174c172")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0011_error_window_scan.down.sql",
                     sha256="5a70192b2156eec33c5228a366d813c421c2256c4320c7ecd49b0635cd23d627")
