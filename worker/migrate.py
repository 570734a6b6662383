"""Running the alembic migrations from Python (``worker migrate``, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from .paths import alembic_ini, migrations_dir


def alembic_config(database_url: str) -> Config:
    config = Config(str(alembic_ini()))
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)
