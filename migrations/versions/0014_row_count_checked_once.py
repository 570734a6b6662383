"""The insert trigger's quick path checks the statement's row count once.

Its second-row check was correlated with the row it is joined with, so for
a COPY or a multi-row INSERT (which can never take the quick path) the
quick statement still joined every inserted row to retrain_models before
giving up: PL/pgSQL's PERFORM runs its query to the end. Uncorrelated, the
check is an InitPlan that PostgreSQL evaluates once, before the join. A
COPY costs the trigger about 5k instructions less per row (~12k to ~7k),
a single-row INSERT about 2.7k less. Nothing else changes.

Revision ID: 0014_row_count_checked_once
Revises: 0013_window_and_baseline_fixes
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0014_row_count_checked_once"
down_revision = "0013_window_and_baseline_fixes"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0014_row_count_checked_once.up.sql",
                     sha256="14ab6bb43595f540bab10fe648ef853cd83bfe3244449c6bf5a3d3b4d2bec14e")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0014_row_count_checked_once.down.sql",
                     sha256="d04ba7c0bdc1eac2bdffddca815664cb33bc03992d0855b8f9f2b067b4027843")
