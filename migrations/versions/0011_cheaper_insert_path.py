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
                     sha256="d9ed585182f70121d0fffd03d263742940bf0b71e30d0a437b6f8b7722c16f75")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0011_cheaper_insert_path.down.sql",
                     sha256="8bba7077974344a47198bc44ccf00aea42dba89a20f78fb8e4d4e3221db1be0d")
