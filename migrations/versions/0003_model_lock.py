"""Per-model transaction lock in every trigger path: no lost window updates,
no deadlock between writers of one model.

Revision ID: 0003_model_lock
Revises: 0002_training_policy
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0003_model_lock"
down_revision = "0002_training_policy"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0003_model_lock.up.sql",
                     sha256="406f322a704b0e3a5c9f793e48ed334dc74fabcfbf87bdb88f59dfa652cf8040")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0003_model_lock.down.sql",
                     sha256="5b9cbfc2498dd56e79309eaf7646fea25ed8549c2f7f240a24f2f8535147b340")
