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
    apply_frozen_sql(op, HERE / "0001_initial.up.sql", sha256="5ae7b41d3ec8a8e8ad524c331a6a7ac1b242a69161a806527c90740b1f3f06d7")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0001_initial.down.sql", sha256="2c40d768fa70b45b4c88d856375e0cb6bb6a562822876110a8ef09ba488789f7")
