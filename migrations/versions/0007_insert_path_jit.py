"""No JIT in the training_data triggers; a bulk load reads its newest
scored rows by key instead of scanning the transition table again.

Revision ID: 0007_insert_path_jit
Revises: 0006_insert_path
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0007_insert_path_jit"
down_revision = "0006_insert_path"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0007_insert_path_jit.up.sql",
                     sha256="ba8e84baccfdd0b6781e5a9d83f587e053847055caff03a56153ba47f49380da")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0007_insert_path_jit.down.sql",
                     sha256="257c1aef411dce421c777102a77f5e492d0de0661506ef08c078b2b129c412ea")
