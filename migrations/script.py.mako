"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Applies frozen SQL beside this file; never edit it after it lands.
"""
from pathlib import Path

from alembic import op

from worker.schema_files import apply_frozen_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

HERE = Path(__file__).parent


def upgrade() -> None:
    apply_frozen_sql(op, HERE / "${up_revision}.up.sql", sha256="")


def downgrade() -> None:
    apply_frozen_sql(op, HERE / "${up_revision}.down.sql", sha256="")
