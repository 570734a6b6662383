"""No JIT in refresh_drift: its cost must follow the new rows, not the
table size that generic plans price in.

Revision ID: 0008_refresh_no_jit
Revises: 0007_insert_path_jit
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0008_refresh_no_jit"
down_revision = "0007_insert_path_jit"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0008_refresh_no_jit.up.sql",
                     sha256="30add1ccb5e9856d292702a648f7824fdb29ffe31bb7f2f1cd0b1e6c132e24c9")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0008_refresh_no_jit.down.sql",
                     sha256="021cedea0c27107464e548853a214491fbfdf2fd8be39ca7ce80abd67d6145d7")
