"""Fixes from a review of revision 0012.

- After TRUNCATE training_data (RESTART IDENTITY or not) every model's
  rolling window starts again at the first row. Window starts that a
  TRUNCATE ... RESTART IDENTITY under revision 0012 left above every id and
  the sequence are repaired on the upgrade. Where the new ids have passed
  such a start already, nothing in the data tells; reset it by hand:
  UPDATE retrain_events SET error_window_after = 0
  WHERE status = 'succeeded' AND finished_at < '<when you truncated>';
- A REPEATABLE READ or SERIALIZABLE writer of wrong predictions always voids
  the model's error bound (a void it saw may have been taken away).
- Rows moved into a model by UPDATE ... SET model_name change its window.
- Wrong predictions under a disabled policy void the model's bound, so the
  first look after the policy is enabled again cannot miss rows committed
  after it.
- training_data.id cannot change (UPDATE ... SET id = DEFAULT would count a
  row twice in the drift monitor).
- store_drift_baseline takes the model's lock before the drift horizon
  when the model has a baseline (the worker takes it first in its outcome
  transaction), so a worker waiting for a writer of the model holds up no
  refresh, no heartbeat and no TRUNCATE, and no due report is lost.
- Writers of a disabled model only try its lock.
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
                     sha256="aa9697cb0ded4bc8c93ea796c85a78eb0b05b396bff5a074597a0e27ba45e379")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0013_window_and_baseline_fixes.down.sql",
                     sha256="c1e7bd15460d556e743e0405caf92c14c1a2d89ed8764056bbb401bea20e936e")
