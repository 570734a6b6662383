"""The schedule check skips only the model it cannot lock.

check_retrain_schedules() ran every model's check in one transaction, so
a caller with a lock_timeout (the worker sets 2 s) lost the whole round to
one busy model: one whose lock a writer of its wrong predictions held
until it committed, or a never-trained model's rows under a lock on
training_data. Each model's check is now a block of its own: a lock that
times out skips that model, with a warning, and the others are recorded.
Without a lock_timeout the check waits as before.

Revision ID: 0016_schedule_check_per_model
Revises: 0015_default_policy_kept
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0016_schedule_check_per_model"
down_revision = "0015_default_policy_kept"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0016_schedule_check_per_model.up.sql",
                     sha256="1d9d439fade3625760b7fe964bad8bd8a0049d7d07308935a932ab04a7cc5cc4")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0016_schedule_check_per_model.down.sql",
                     sha256="bf6c8c9ba547dff1ef72364cb3f0779d9bee26e6702ec690f9b09efa2845bcbb")
