"""Claiming and releasing events, through the worker's own functions, on a
real database."""

from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql
from click.testing import CliRunner

from tests.helpers import events, insert_metric, set_policy
from worker import claiming
from worker.cli import cli
from worker.db import connect

STALE = timedelta(seconds=30)


@pytest.fixture
def work(db_url):
    with connect(db_url, autocommit=True) as conn:
        yield conn


def test_a_retry_merged_into_a_new_pending_event_keeps_its_attempts_and_backoff(conn, work):
    set_policy(conn, "m", cooldown="0")
    insert_metric(conn, "m", accuracy=0.1)           # records an event
    event = claiming.claim(work, "w1", STALE)
    assert event is not None and event.attempts == 1
    insert_metric(conn, "m", accuracy=0.2)           # fires again: a new pending event
    what = claiming.release(work, event, "w1", error="boom", delay=timedelta(seconds=60),
                            count_attempt=True)
    assert what.startswith("merged into pending event")
    [cancelled] = events(conn, "m", "cancelled")
    [pending] = events(conn, "m", "pending")
    assert "boom" in cancelled["error"]
    assert pending["attempts"] == 1
    assert pending["run_after"] >= datetime.now(timezone.utc) + timedelta(seconds=50)


def test_a_pending_event_waits_while_its_model_runs_and_a_stale_one_is_taken_over(conn, work):
    set_policy(conn, "m", cooldown="0")
    insert_metric(conn, "m", accuracy=0.1)
    first = claiming.claim(work, "w1", STALE)
    insert_metric(conn, "m", accuracy=0.2)           # pending while the first runs
    assert claiming.claim(work, "w2", STALE) is None
    conn.execute("UPDATE retrain_events SET heartbeat_at = now() - interval '1 hour' "
                 "WHERE id = %s", (first.id,))
    taken = claiming.claim(work, "w2", STALE)
    assert taken.id == first.id and taken.attempts == 2
    assert claiming.claim(work, "w3", STALE) is None


def test_two_running_events_of_one_model_are_refused_by_the_database(conn):
    conn.execute("INSERT INTO retrain_events (model_name, reason, reasons, status) "
                 "VALUES ('m', 'manual', '{manual}', 'running')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO retrain_events (model_name, reason, reasons, status) "
                     "VALUES ('m', 'manual', '{manual}', 'running')")


@pytest.mark.parametrize("setting", ["cooldown", "schedule_interval"])
def test_intervals_are_bounded_so_that_timestamps_stay_in_range(conn, setting):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        set_policy(conn, "m", **{setting: "1000000 years"})
    assert f"{setting}_at_most_10_years" in str(err.value)


def test_status_of_an_unknown_model_is_an_error(db_url):
    result = CliRunner().invoke(cli, ["status", "--database-url", db_url, "--model", "nope"])
    assert result.exit_code != 0
    assert "unknown model 'nope'" in str(result.exception)


def test_worker_connections_are_read_committed_whatever_the_database_default(conn, db_url):
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = "
                         "'repeatable read'").format(sql.Identifier(dbname)))
    with connect(db_url, autocommit=True) as worker:
        assert worker.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"
        worker.execute("SELECT * FROM refresh_drift()")
        with worker.transaction():
            assert worker.execute("SHOW transaction_isolation").fetchone()[0] == "read committed"


def _a_running_event_with_a_drift_baseline(conn, work, seed: int):
    """A claimed event of model m, which has a drift baseline, and the
    outcome its retrain would report (with a new baseline)."""
    from tests import drift_support as ds
    from worker import drift
    from worker.features import frame_from_features, infer_kinds

    rows = ds.feature_rows(200, seed=seed)
    ds.quiet_policy(conn, "m", drift_min_rows=1)
    ds.store_baseline(conn, "m", rows)
    set_policy(conn, "m", cooldown="0", min_accuracy=0.5, error_rate_threshold=0.1)
    insert_metric(conn, "m", accuracy=0.1)  # records an event
    event = claiming.claim(work, "w1", STALE)
    outcome = {"baseline": drift.baseline(rows, infer_kinds(frame_from_features(rows))),
               "baseline_rows": len(rows), "mlflow_run_id": "run", "model_version": "2",
               "accuracy": 0.9, "champion_accuracy": None, "promoted": True, "rows_used": 200,
               "holdout_rows": 40, "training_window": 160, "trained_through_id": 200}
    return event, outcome


def _finish_in_background(work, event, outcome):
    """finish_succeeded in a thread; returns the thread and the list its
    database error, if any, lands in."""
    import threading

    failures = []

    def finish():
        try:
            claiming.finish_succeeded(work, event, "w1", outcome)
        except psycopg.Error as exc:
            failures.append(exc)

    finishing = threading.Thread(target=finish)
    finishing.start()
    return finishing, failures


def test_recording_a_success_does_not_wait_for_an_open_writer_of_the_model(conn, work, db_url):
    # An ETL transaction brought a wrong prediction and holds the model's
    # lock to its commit: the outcome takes no lock a writer holds.
    from tests.helpers import insert_scored

    event, outcome = _a_running_event_with_a_drift_baseline(conn, work, seed=3)
    with psycopg.connect(db_url) as etl:
        insert_scored(etl, "m", [True])
        work.execute("SET lock_timeout = '2s'")
        claiming.finish_succeeded(work, event, "w1", outcome)
        etl.commit()
    [done] = events(conn, "m", "succeeded")
    assert done["id"] == event.id
    assert done["trained_through_id"] == outcome["trained_through_id"]


def test_recording_a_success_and_a_truncating_writer_do_not_deadlock(conn, work, db_url):
    # An ETL transaction truncates training_data (its trigger restarts the
    # baselines' windows), then writes wrong predictions (the model's lock),
    # while the worker records a success that replaces the baseline.
    from tests.helpers import insert_scored

    event, outcome = _a_running_event_with_a_drift_baseline(conn, work, seed=4)
    with psycopg.connect(db_url) as etl:
        etl.execute("TRUNCATE training_data")
        finishing, failures = _finish_in_background(work, event, outcome)
        etl.execute("SET lock_timeout = '5s'")
        insert_scored(etl, "m", [True] * 60)
        etl.commit()
        finishing.join(timeout=30)
        assert not finishing.is_alive()
    assert failures == []
    [done] = events(conn, "m", "succeeded")
    assert done["id"] == event.id
    assert ds_baseline_after(conn, "m") == outcome["trained_through_id"]


def ds_baseline_after(conn, model):
    return conn.execute("SELECT after_row_id FROM drift_baselines WHERE model_name = %s",
                        (model,)).fetchone()[0]
