"""pg-retrain 0.1.0: the whole schema.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-06

Applies frozen SQL beside this file: 0001_initial.up.sql is sql/schema.sql as
released in 0.1.0. Never edit either file; a later change is a new revision
that holds only what it changes (CREATE OR REPLACE of the functions it
touches, its ALTERs), frozen beside it.
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
    apply_frozen_sql(op, HERE / "0001_initial.up.sql", sha256="183ea954ce95380a999b21657c05cc4959d05af10c26f9ddd38db69a1e7800c8")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0001_initial.down.sql", sha256="7a1d4e28c94b2ccd247191dba0124e537d1b5da245feea00372cc349221090be")
