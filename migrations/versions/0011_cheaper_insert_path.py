"""A cheaper insert path: the rolling error window read from training_data
when it may have risen; a short path for single-row statements; cheaper
event extension (domains for status and reason, details merged in the
UPDATE, an inlined lock function).

Revision ID: 0011_cheaper_insert_path
Revises: 0010_one_running_bounds
Create Date: 2026-11-26

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0011_cheaper_insert_path"
down_revision = "0010_one_running_bounds"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0011_cheaper_insert_path.up.sql",
                     sha256="e963bdf5a74373cab5c139f3922b995b7f44712b2bffeffc219226de7c58b874")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0011_cheaper_insert_path.down.sql",
                     sha256="4d57c87983e178be29ce33500d8d516bf34f903e641fef943db9444f1564c299")
