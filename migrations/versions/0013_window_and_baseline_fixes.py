"""Fixes from a review of revision 0012.

- After TRUNCATE training_data (RESTART IDENTITY or not) every model's
  rolling window starts again at the first row; windows left after ids that
  a restart had not handed out again are repaired on the upgrade.
- A REPEATABLE READ or SERIALIZABLE writer of wrong predictions always voids
  the model's error bound (a void it saw may have been taken away).
- Rows moved into a model by UPDATE ... SET model_name change its window.
- Wrong predictions under a disabled policy void the model's bound, so the
  first look after the policy is enabled again cannot miss rows committed
  after it.
- training_data.id cannot change (UPDATE ... SET id = DEFAULT would count a
  row twice in the drift monitor).
- store_drift_baseline takes the model's lock before the drift horizon, so
  a worker waiting for a writer of the model holds up no refresh.
- Databases upgraded after sql/roles.sql ran give the worker the same
  privileges on retrain_window_bounds and retrain_window_voids as a fresh
  install.

Revision ID: 0013_window_and_baseline_fixes
Revises: 0012_insert_path_writes_nothing
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0013_window_and_baseline_fixes"
down_revision = "0012_insert_path_writes_nothing"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0013_window_and_baseline_fixes.up.sql",
                     sha256="5086644d93a40778503755c3d165d69421227e2723c396cef252e45605d8c79c")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0013_window_and_baseline_fixes.down.sql",
                     sha256="432cd8eeb29d26ef70a594f77e5b103d79224739661171551e7552433fb9ee3b")
