"""Alembic environment: the URL is DATABASE_URL (or the one `worker migrate`
passes in), and everything is created in pg-retrain's schema."""

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from worker.db import SCHEMA, sqlalchemy_url

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit(
            "DATABASE_URL is not set: export DATABASE_URL=postgresql://user@host/db, "
            "or run `worker migrate` to use the embedded database"
        )
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Functions capture this with SET search_path FROM CURRENT; pg_temp
        # last, as SECURITY DEFINER functions require.
        connection.execute(
            text("SELECT set_config('search_path', quote_ident(:schema) || ', pg_temp', false)"),
            {"schema": SCHEMA},
        )
        connection.commit()
        context.configure(connection=connection, transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
