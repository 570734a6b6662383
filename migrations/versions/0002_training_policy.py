"""Policy columns for training: estimator, training window, holdout.

Revision ID: 0002_training_policy
Revises: 0001_initial
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0002_training_policy"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0002_training_policy.up.sql",
                     sha256="3cdd29c2f59b8fa24bed551cf0c63b56f7c8324d4a3fe46f9d96a1425d47fb39")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0002_training_policy.down.sql",
                     sha256="24ce7c474dc55df0684e54cdb2a94a7e85d1c37b7a751c7f77629823a6baf6ef")
