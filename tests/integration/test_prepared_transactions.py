"""Two-phase ETL writers (PREPARE TRANSACTION / COMMIT PREPARED).

A prepared transaction keeps its locks and its rows' invisibility with no
backend behind it until someone commits or rolls it back. The error window
and the drift window must see its rows once, and only once, committed.

The session's server may not allow prepared transactions (PostgreSQL's
default max_prepared_transactions is 0), so this module starts a throwaway
embedded server of its own that does, unless the session's server already
does.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests import drift_support as ds
from tests.conftest import _create_database, _drop_database
from tests.helpers import copy_rows, events, insert_row, insert_scored, set_policy
from worker import embedded, migrate

M = "m"


class TwoPhaseServer:
    """A server with max_prepared_transactions > 0."""

    def __init__(self, server_url: str):
        self.url = server_url
        self._data: Path | None = None
        self._handle = None
        with psycopg.connect(server_url) as conn:
            allowed = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
        if allowed == 0:
            self._data = Path(tempfile.mkdtemp(prefix="pg-retrain-2pc-")) / "pgdata"
            try:
                self._handle = embedded.start(self._data)
                with psycopg.connect(self._handle.url, autocommit=True) as conn:
                    conn.execute("ALTER SYSTEM SET max_prepared_transactions = 8")
                # The setting needs a restart.
                self._handle.cleanup()
                embedded.stop(self._data)
                self._handle = embedded.start(self._data)
                self.url = self._handle.url
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._data is not None:
            try:
                if self._handle is not None:
                    self._handle.cleanup()
                embedded.stop(self._data)
            finally:
                shutil.rmtree(self._data.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def two_phase(server_url):
    server = TwoPhaseServer(server_url)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def tp_url(two_phase):
    """A fresh migrated database on the two-phase server; prepared
    transactions a test leaves behind are rolled back before it is dropped."""
    name = f"pgretrain_2pc_{uuid.uuid4().hex[:12]}"
    url = _create_database(two_phase.url, name)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(two_phase.url, autocommit=True) as admin:
        gids = [r[0] for r in admin.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = %s", (name,)).fetchall()]
    with psycopg.connect(url, autocommit=True) as conn:
        for gid in gids:
            conn.execute(psycopg.sql.SQL("ROLLBACK PREPARED {}").format(psycopg.sql.Literal(gid)))
    _drop_database(two_phase.url, name)


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


def _prepare(url: str, gid: str, write) -> None:
    """Run ``write(conn)`` in a transaction and PREPARE it as ``gid``; the
    session then ends, leaving the prepared transaction with no backend."""
    with psycopg.connect(url) as writer:
        write(writer)
        writer.execute(psycopg.sql.SQL("PREPARE TRANSACTION {}").format(psycopg.sql.Literal(gid)))


def _finish(url: str, gid: str, *, commit: bool) -> None:
    verb = "COMMIT PREPARED" if commit else "ROLLBACK PREPARED"
    with _connect(url) as conn:
        conn.execute(psycopg.sql.SQL(verb + " {}").format(psycopg.sql.Literal(gid)))


def _baseline(conn) -> None:
    rows = ds.feature_rows(500, seed=31)
    copy_rows(conn, ds.unscored(rows, M))
    ds.store_baseline(conn, M, rows)
    ds.quiet_policy(conn, M)


# ---------------------------------------------------------------------------
# Drift monitor
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_a_prepared_writers_rows_enter_the_drift_window_once_committed(tp_url, commit):
    with _connect(tp_url) as conn:
        _baseline(conn)
        _prepare(tp_url, "etl-1",
                 lambda w: ds.insert_values(w, ds.unscored(ds.feature_rows(40, seed=32), M)))
        ds.insert_values(conn, ds.unscored(ds.feature_rows(60, seed=33), M))
        assert ds.refresh(conn)[M]["window_rows"] == 60
        _finish(tp_url, "etl-1", commit=commit)
        if commit:
            assert ds.refresh(conn)[M]["window_rows"] == 100
        else:
            assert ds.refresh(conn) == {}
        ds.assert_recount(conn, M)


# ---------------------------------------------------------------------------
# Error window and events
# ---------------------------------------------------------------------------


def test_a_prepared_wrong_prediction_keeps_its_models_lock_and_counts_once_committed(tp_url):
    with _connect(tp_url) as conn:
        set_policy(conn, M, error_rate_threshold=0.1, error_window=10, min_error_rows=10,
                   cooldown="0", schedule_interval=None)
        insert_scored(conn, M, [False] * 9)
        # Ten rows, one wrong: 0.1 is not above the threshold.
        _prepare(tp_url, "etl-3", lambda w: insert_scored(w, M, [True]))

        # Correct predictions take no lock and pass; a wrong one waits for
        # the prepared transaction, which holds the model's lock.
        insert_scored(conn, M, [False])
        conn.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            insert_scored(conn, M, [True])
        conn.execute("RESET lock_timeout")
        assert events(conn, M) == []

        _finish(tp_url, "etl-3", commit=True)
        # The newest ten scored rows now hold the prepared error and this one.
        insert_scored(conn, M, [True])
        fired = events(conn, M)
        assert len(fired) == 1 and fired[0]["reasons"] == ["error_rate"]
        detail = fired[0]["details"]["error_rate"]["first"]
        assert (detail["rolling_error_rate"], detail["window_rows"]) == (pytest.approx(0.2), 10)


def test_a_transaction_that_recorded_an_event_cannot_be_prepared(tp_url):
    """PostgreSQL refuses to PREPARE a transaction that sent NOTIFY, and an
    event's notification is sent in the transaction that records it."""
    with _connect(tp_url) as conn:
        set_policy(conn, M, error_rate_threshold=0.1, cooldown="0", schedule_interval=None)
        with psycopg.connect(tp_url) as writer:
            insert_row(writer, M, error_rate=0.5)
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="NOTIFY"):
                writer.execute("PREPARE TRANSACTION 'etl-4'")
        assert events(conn, M) == []
        assert conn.execute("SELECT count(*) FROM training_data").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_prepared_xacts "
                            "WHERE database = current_database()").fetchone()[0] == 0
