"""An embedded PostgreSQL for users and tests with no DATABASE_URL.

The ``pgserver`` package ships PostgreSQL binaries, so a machine with nothing
but Python can run the whole system. The server listens on a Unix socket
only (no TCP port to collide with) and is started on demand; it keeps
running after the command that started it, so the next command, and every
worker, finds it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

#: Where the default embedded database lives (env PG_RETRAIN_HOME).
DEFAULT_HOME = Path(".pg-retrain")
DATABASE = "pgretrain"


def start(data_dir: Path, *, delete_on_exit: bool = False):
    """Start (or reuse) the server for ``data_dir``; return its handle.

    The handle's ``url`` attribute is a libpq URL of the ``postgres`` database.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver

        data_dir = Path(data_dir).resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(
            data_dir, cleanup_mode="delete" if delete_on_exit else None
        )
    server.url = server.get_uri()
    log.debug("embedded PostgreSQL at %s", server.url)
    return server


def stop(data_dir: Path, timeout: float = 30.0) -> None:
    """Stop the server of ``data_dir`` if it runs (a fast shutdown: SIGINT to
    the postmaster, which is what pg_ctl does; pg_ctl itself refuses root)."""
    pid_file = Path(data_dir) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def home() -> Path:
    return Path(os.environ.get("PG_RETRAIN_HOME", DEFAULT_HOME))


def default_database_url() -> str:
    """The URL of the default embedded database, started, created and
    migrated on first use."""
    from . import migrate

    data_dir = home() / "pgdata"
    home().mkdir(parents=True, exist_ok=True)
    # Several workers may start at once: one of them starts, creates and
    # migrates; the others wait for it and find everything in place.
    with open(home() / "start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (data_dir / "PG_VERSION").exists():
            log.info("starting an embedded PostgreSQL in %s (no DATABASE_URL set)", data_dir)
        server = start(data_dir)
        url = make_url(server.url).set(database=DATABASE).render_as_string(hide_password=False)
        with psycopg.connect(server.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        migrate.upgrade(url)
    return url
