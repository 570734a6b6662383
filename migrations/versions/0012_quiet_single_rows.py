"""Quiet single-row INSERTs in one statement; wrong predictions read the
rolling window only when a kept upper bound on its errors does not already
rule out a firing (retrain_window_bounds, training_data_removals).

Revision ID: 0012_quiet_single_rows
Revises: 0011_cheaper_insert_path
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0012_quiet_single_rows"
down_revision = "0011_cheaper_insert_path"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0012_quiet_single_rows.up.sql",
                     sha256="d90b88f72c26ae74b8b47ed0cc500b70d6b74f65271d565ad519d46f6902984c")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0012_quiet_single_rows.down.sql",
                     sha256="3ce490dd7cb43d0a105232048c25e8184c5d44676d81b3c4f62b1a72ed4964ef")
