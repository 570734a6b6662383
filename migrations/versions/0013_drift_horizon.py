"""The drift monitor counts training_data by id up to a horizon held back by
the transactions writing it; the insert path writes nothing for the monitor
(drift_inbox and drift_late_rows are gone; label changes by UPDATE go to
drift_label_changes, per row).

Upgrading takes a SHARE lock on training_data (writers wait until it
commits) and first counts what drift_inbox still holds, so nothing is lost
or counted twice. A label that reaches a row committed after its model's
baseline but with an id below the baseline's max_row_id counted before this
revision; after it, such late rows do not exist (the horizon waits for
them), and their labels from before the upgrade are not counted again.

Revision ID: 0013_drift_horizon
Revises: 0012_quiet_single_rows
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0013_drift_horizon"
down_revision = "0012_quiet_single_rows"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0013_drift_horizon.up.sql",
                     sha256="da1e1f8d9235c85a5d8f6919602c66a014f9a0479f149ab8f5df8a738bd0e0e2")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0013_drift_horizon.down.sql",
                     sha256="6f581e2db8f924a62d7d9553916738f66e4dce7e3cbe2a40342b327417474deb")
