"""TRUNCATE retrain_policies is refused.

The default policy row cannot be deleted (a row trigger refuses), but
TRUNCATE fires no row trigger and removed it. A statement trigger now
refuses TRUNCATE with the same error; the hint gives the DELETE that
removes every other policy.

Revision ID: 0015_default_policy_kept
Revises: 0014_quick_path_plans
Create Date: 2026-12-01

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0015_default_policy_kept"
down_revision = "0014_quick_path_plans"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0015_default_policy_kept.up.sql",
                     sha256="7d3051e55be1d950723d49874a5debfcfbb7c29acc57803d4284d55c93c990ff")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0015_default_policy_kept.down.sql",
                     sha256="b76f6a32929ba5339c3719b10d4051aa9349452a41e5b81dc2daf29201b17927")
