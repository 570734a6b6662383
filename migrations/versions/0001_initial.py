"""The database half: tables, triggers, schedule and manual functions, views.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0001_initial.up.sql",
                     sha256="c524fbbcef6988ccdf6b1db898c04c9106fd1cc458ecadffb6c7b21e4fbc9966")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0001_initial.down.sql",
                     sha256="9530e2d152fb5b11f83318a84eea68278ca8e99823de3774c9e529708be43abb")
