"""Database URLs and connections.

DATABASE_URL is a libpq URL (``postgresql://user@host:5432/db``); SQLAlchemy
and alembic need the driver spelled out, psycopg wants it plain.
"""

from __future__ import annotations

import os

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import UserError

#: The schema that holds every pg-retrain object (SPEC section 1).
SCHEMA = os.environ.get("PG_RETRAIN_SCHEMA", "public")


def libpq_url(url: str) -> str:
    """The URL as psycopg/libpq accept it (no ``+driver`` suffix).

    Only the scheme is rewritten: re-rendering the whole URL would encode a
    space in ``?host=/path with space`` as '+', which libpq reads literally."""
    _parse(url)  # a clear error for a URL that is not PostgreSQL's
    scheme, sep, rest = url.partition("://")
    return f"postgresql{sep}{rest}" if "+" in scheme else url


def sqlalchemy_url(url: str) -> str:
    """The URL as SQLAlchemy needs it: ``postgresql+psycopg://``."""
    parsed = _parse(url)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _parse(url: str):
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(f"bad database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise UserError(
            f"bad database URL {url!r}: expected postgresql://user@host:port/database"
        )
    return parsed.set(drivername="postgresql")


def connect(url: str, *, autocommit: bool = False, **kwargs) -> psycopg.Connection:
    """A psycopg connection whose search_path is pg-retrain's schema.

    Connection failures become one readable UserError line.
    """
    try:
        conn = psycopg.connect(libpq_url(url), autocommit=True, **kwargs)
    except psycopg.OperationalError as exc:
        raise UserError(f"cannot connect to the database: {one_line(exc)}") from None
    # Quoted by the server, whatever the schema is called. READ COMMITTED
    # whatever the database's default: the drift monitor counts, and the
    # queue claims, only there (each statement sees what committed before it).
    conn.execute("SELECT set_config('search_path', quote_ident(%s), false), "
                 "set_config('default_transaction_isolation', 'read committed', false)",
                 (SCHEMA,))
    conn.autocommit = autocommit
    return conn


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a readable log or error."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
