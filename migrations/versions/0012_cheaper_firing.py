"""Cheaper firing path: event status and reason checked by domains, details
merged in the UPDATE, the model lock an inlined SQL function; a failed
retrain makes the next scored row look at the error window again.

Revision ID: 0012_cheaper_firing
Revises: 0011_error_window_scan
Create Date: 2026-11-26

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0012_cheaper_firing"
down_revision = "0011_error_window_scan"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0012_cheaper_firing.up.sql",
                     sha256="0e6c6c9329374fe78fd8ad334a744af1dd5f84aabda9ab5c5e5d5f3cc373f7b2")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0012_cheaper_firing.down.sql",
                     sha256="03a21b22595926048a560d04e62cec4aeb2ee4ebb5727cc9e035addfc2e64776")
