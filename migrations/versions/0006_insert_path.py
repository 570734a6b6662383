"""A cheaper insert path: one statement for the common path of the insert
trigger; PL/pgSQL helpers whose plans are kept; extend-first event recording.

Revision ID: 0006_insert_path
Revises: 0005_drift_refresh_fixes
Create Date: 2026-11-25

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = "0006_insert_path"
down_revision = "0005_drift_refresh_fixes"
branch_labels = None
depends_on = None

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "0006_insert_path.up.sql",
                     sha256="4d406bb6a68dd04d842d48b86ba615b409c2452713e0d1a4986289642dfca1f7")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "0006_insert_path.down.sql",
                     sha256="e7abaf7f19026fe4eb517f5b01ee5f9df105b97387b615de32ab9753d59efb65")
