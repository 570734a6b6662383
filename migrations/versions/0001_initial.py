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
    apply_frozen_sql(op, HERE / "0001_initial.up.sql", sha256="0dbc6d2946c36048cdc0c8374ae58ae6118675df99bd1a88d3c883200b63a3b4")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0001_initial.down.sql", sha256="e0f5e83d95d44d61c2fed77774dd5777aaa6a47b69d962a0f2eeb77197c44b63")
