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
                     sha256="b3c1f2b2f0a60f2fcf0a4614cd42e3805fa5495cbaec9ab7cd4b38e7a46cd62c")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0011_cheaper_insert_path.down.sql",
                     sha256="9ddf3bd9d62e12228cc425e2bd6f7ce3b43abdc791098d33e134860f79cc6bf2")
