"""The insert path writes nothing unless a row can fire something.

- A quiet single-row INSERT is one read-only statement (the row and its
  model's policy copies).
- A wrong prediction reads the model's rolling window only when a kept upper
  bound on its errors (retrain_window_bounds; retrain_window_voids says when
  one no longer holds) does not rule out a firing.
- The drift monitor counts training_data by id up to a horizon held back by
  the transactions writing it (drift_horizon_advance, drift_horizon,
  drift_writers); label changes by UPDATE are kept per row
  (drift_label_changes). drift_inbox and drift_late_rows go; a baseline's
  late rows become the gaps of its before_ids, and back on a downgrade.

Upgrading (and downgrading) takes a SHARE lock on training_data, so writers
wait until it commits, and first counts what the drift monitor has not
counted yet, so nothing is lost or counted twice. Reports a refresh had
deferred (report_due) are lost on a downgrade.

Revision ID: 0012_insert_path_writes_nothing
Revises: 0011_cheaper_insert_path
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0012_insert_path_writes_nothing"
down_revision = "0011_cheaper_insert_path"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0012_insert_path_writes_nothing.up.sql",
                     sha256="e3bf571bdf687657588fa27ce28bdb7040eb66c3371eb9018f55ae9acc88dcef")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0012_insert_path_writes_nothing.down.sql",
                     sha256="dd60624f995f81458d0ebcf7dfba02847caf200e9e880fdb4f9de2d177f0ef11")
