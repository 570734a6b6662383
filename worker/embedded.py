"""An embedded PostgreSQL for users and tests with no DATABASE_URL.

The ``pgserver`` package ships PostgreSQL binaries, so a machine with nothing
but Python can run the whole system. The server listens on a Unix socket
only (no TCP port to collide with) and is started on demand; it keeps
running after the command that started it, so the next command, and every
worker, finds it. ``worker db stop`` stops it.

Everything the embedded default keeps lives in one directory, the data home:
``$PG_RETRAIN_HOME``, else the per-user data directory (platformdirs, e.g.
``~/.local/share/pg-retrain`` on Linux). It holds ``pgdata/`` (the server),
and, when no MLflow URI is given, ``mlflow.db`` and ``mlartifacts/``, so that
running a command from another directory finds the same database and models.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE = "pgretrain"
APP_NAME = "pg-retrain"


def home() -> Path:
    """The data home: $PG_RETRAIN_HOME, else the per-user data directory."""
    configured = os.environ.get("PG_RETRAIN_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    import platformdirs

    per_user = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    # pgserver cannot start a server in a path with whitespace (see start()),
    # which macOS's "Application Support" has: a dot directory instead.
    return Path.home() / ".pg-retrain" if _has_space(per_user) else per_user


def data_dir() -> Path:
    """The embedded server's data directory (PGDATA)."""
    return home() / "pgdata"


def tracking_uri() -> str:
    """The MLflow store that goes with the embedded database."""
    return f"sqlite:///{home() / 'mlflow.db'}"


class StartError(RuntimeError):
    """The embedded server did not start; the message is one line."""


def start(data_dir: Path, *, delete_on_exit: bool = False):
    """Start (or reuse) the server for ``data_dir``; return its handle.

    The handle's ``url`` attribute is a libpq URL of the ``postgres`` database.
    """
    data_dir = Path(data_dir).resolve()
    _refuse_whitespace(data_dir)
    # pgserver logs each failed command with its full output, on many lines;
    # the caller reports one line instead (and the server log's path).
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = pgserver.get_server(
                data_dir, cleanup_mode="delete" if delete_on_exit else None
            )
        except Exception as exc:
            raise StartError(_start_failure(data_dir, exc)) from exc
    server.url = server.get_uri()
    log.debug("embedded PostgreSQL at %s", server.url)
    return server


def running_pid(data_dir: Path) -> int | None:
    """The postmaster's pid if a server runs on ``data_dir``, else None."""
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user (pgserver, when we are not root)
        pass
    return pid


def stop(data_dir: Path, timeout: float = 30.0) -> bool:
    """Stop the server of ``data_dir`` if it runs (a fast shutdown: SIGINT to
    the postmaster, which is what pg_ctl does; pg_ctl itself refuses root).
    True if a server was stopped, False if none was running."""
    pid = running_pid(data_dir)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"the embedded PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s")


def _has_space(path: Path) -> bool:
    return any(c.isspace() for c in str(path))


def _refuse_whitespace(data_dir: Path) -> None:
    # pgserver hands the directory to postgres as `-k <dir>`, unquoted.
    if _has_space(data_dir):
        raise StartError(f"the data directory {data_dir} contains whitespace, which pgserver "
                         "cannot handle; set PG_RETRAIN_HOME to a path without spaces")


def _start_failure(data_dir: Path, exc: Exception) -> str:
    """One line: the server log's last line if there is one, else the error."""
    log_file = data_dir / "log"
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        lines = []
    cause = lines[-1].strip() if lines else (str(exc).strip().splitlines() or [repr(exc)])[0]
    return f"{cause} (server log: {log_file})" if lines else cause


def psql_url(socket_dir: Path | str, database: str = DATABASE) -> str:
    """A URL psql and psycopg accept: the socket directory as ``host``,
    %-encoded (libpq decodes %XX in URIs, but not '+' for a space)."""
    return f"postgresql://postgres@/{database}?host={quote(str(socket_dir), safe='/')}"


def default_database_url() -> str:
    """The URL of the default embedded database, started, created and
    migrated on first use."""
    from . import migrate

    data = data_dir()
    _refuse_whitespace(data)
    home().mkdir(parents=True, exist_ok=True)
    # Several workers may start at once: one of them starts, creates and
    # migrates; the others wait for it and find everything in place.
    with open(home() / "start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was_running = running_pid(data) is not None
        if not was_running:
            _say_root_once(data)
        server = start(data)
        url = psql_url(server.get_postmaster_info().socket_dir)
        with psycopg.connect(server.url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        migrate.upgrade(url)
    # Said when this command started the server; later commands find it
    # running and stay quiet (`worker db url` prints it any time).
    (log.info if not was_running else log.debug)(
        "embedded PostgreSQL: %s (data directory %s)", url, data)
    return url


def _say_root_once(data: Path) -> None:
    """As root, pgserver creates a system user ``pgserver``, gives it the data
    directory and opens the directories above it for traversal (PostgreSQL
    refuses to run as root). Surprising on a shared machine: said once, when
    the data directory is first created."""
    if os.name != "posix" or os.geteuid() != 0 or (data / "PG_VERSION").exists():
        return
    log.warning("running as root: pgserver creates a system user 'pgserver', hands it %s "
                "and makes the directories above it readable by all users "
                "(set PG_RETRAIN_HOME to choose another place, or DATABASE_URL to use "
                "your own server)", data)
