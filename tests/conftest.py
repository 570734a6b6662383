"""Shared fixtures: a real PostgreSQL for every database test.

With DATABASE_URL set, tests create their databases on that server (the
role needs CREATEDB). Without it, the session starts a throwaway embedded
server and deletes it afterwards, so the suite passes on a machine with
nothing running.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from worker import embedded, migrate
from worker.db import libpq_url


def _with_database(url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(libpq_url(url)).set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def server_url():
    """An admin URL of a real PostgreSQL server."""
    if os.environ.get("DATABASE_URL"):
        yield libpq_url(os.environ["DATABASE_URL"])
        return
    tmp = Path(tempfile.mkdtemp(prefix="pg-retrain-test-"))
    try:
        server = embedded.start(tmp / "pgdata", delete_on_exit=True)
        try:
            yield server.url
        finally:
            server.cleanup()  # stops the server and deletes pgdata
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # and the directory around it


def _admin(server_url):
    return psycopg.connect(server_url, autocommit=True)


def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    with _admin(server_url) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return _with_database(server_url, name)


def _drop_database(server_url: str, name: str) -> None:
    with _admin(server_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def migrated_template(server_url):
    """A database migrated to head, used as the template of each test's copy."""
    name = f"pgretrain_tpl_{uuid.uuid4().hex[:10]}"
    url = _create_database(server_url, name)
    migrate.upgrade(url)
    yield name
    _drop_database(server_url, name)


@pytest.fixture
def empty_db_url(server_url):
    """A fresh, empty database (no migrations)."""
    name = f"pgretrain_t_{uuid.uuid4().hex[:12]}"
    url = _create_database(server_url, name)
    yield url
    _drop_database(server_url, name)


@pytest.fixture
def db_url(server_url, migrated_template):
    """A fresh database at migration head, private to one test."""
    name = f"pgretrain_t_{uuid.uuid4().hex[:12]}"
    url = _create_database(server_url, name, template=migrated_template)
    yield url
    _drop_database(server_url, name)


@pytest.fixture
def conn(db_url):
    """An autocommit connection to the test's database."""
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection
