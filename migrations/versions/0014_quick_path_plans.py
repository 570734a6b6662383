"""The insert trigger's quick statement: plans that fit every later statement.

Two defects of the quick statement (the single-row path), both from plans
that PostgreSQL makes once per session for the size of the first statement:

- Its second-row check was correlated with the row it is joined with, and
  PL/pgSQL's PERFORM runs its query to the end, so a COPY or a multi-row
  INSERT (which can never take the quick path) still joined every one of
  its rows to retrain_models before giving up. Uncorrelated, the check is
  an InitPlan that PostgreSQL evaluates once, before anything else. A COPY
  now costs the trigger about 7k instructions per row instead of 12k.
- The row was joined to retrain_models, and the join method was chosen for
  the first statement's size: in a session whose first statement was a
  COPY, every later single-row INSERT scanned all of retrain_models (with
  5000 models, 1.0-1.3 ms per INSERT instead of ~0.25). The model's row is
  now looked up by a correlated subquery (OFFSET 0 keeps it one), an index
  lookup per row whatever the plan was made for. That is also ~3k
  instructions cheaper per single-row INSERT.

Nothing else changes.

Revision ID: 0014_quick_path_plans
Revises: 0013_window_and_baseline_fixes
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0014_quick_path_plans"
down_revision = "0013_window_and_baseline_fixes"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0014_quick_path_plans.up.sql",
                     sha256="2a2c215e25a515b3668786959e8bba8a6971a9dc85f64ab16579964f000dc843")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0014_quick_path_plans.down.sql",
                     sha256="70333554f60fc52c2fc37e82227a8d529c5da2541a6a02f7b1463dfc48bde410")
