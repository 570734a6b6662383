"""SPEC section 4 (`worker listen`: several at once, SIGTERM) and section 5
(crash-safe: stale heartbeats are taken over; no event runs twice or is
lost), with real worker processes, signals and lost connections."""

from __future__ import annotations

import os
import re
import signal
import time

import psycopg
import pytest

from tests.acceptance.support import (
    KnownBug,
    event,
    insert_firing_row,
    insert_labelled,
    request_retrain,
    symptom,
    wait_event,
    wait_for,
)
from tests.helpers import events, set_policy, wait_until_blocked

pytestmark = pytest.mark.slow

# A model whose retrain takes seconds: 30k rows with 15% label noise, so
# the gradient boosting runs all its iterations on every window tried.
SLOW_ROWS = 30_000


def insert_slow_model(conn, model: str) -> None:
    insert_labelled(conn, model, SLOW_ROWS, seed=7, label_noise=0.15, with_prediction=False)


def wait_running(conn, event_id: int, workers, timeout: float = 60) -> dict:
    return wait_event(conn, event_id, statuses=("running",), timeout=timeout, workers=workers)


def test_two_workers_run_every_event_exactly_once(
        conn, start_worker, mlflow_client, fresh_mlflow_store):
    # Both start at once on a tracking store that does not exist yet.
    workers = [start_worker(wait_listening=False), start_worker(wait_listening=False)]
    for w in workers:
        w.wait_for_log("listening on channel", timeout=90)

    models = [f"m{i}" for i in range(6)]
    for i, model in enumerate(models):
        insert_labelled(conn, model, 150, seed=100 + i)
    assert events(conn) == []
    ids = {model: request_retrain(conn, model) for model in models}
    assert len(set(ids.values())) == 6

    for model, event_id in ids.items():
        wait_event(conn, event_id, timeout=120, workers=workers)

    rows = events(conn)
    assert sorted(r["id"] for r in rows) == sorted(ids.values()), "unexpected extra events"
    for row in rows:
        assert row["status"] == "succeeded", row
        assert row["attempts"] == 1, row
        assert any(w.owns(row["worker_id"]) for w in workers), row["worker_id"]
        assert row["model_version"] == "1" and row["promoted"] is True

    # Each event claimed once, across both workers' logs.
    logs = "\n".join(w.log() for w in workers)
    for event_id in ids.values():
        claims = re.findall(rf"event {event_id} claimed", logs)
        assert len(claims) == 1, f"event {event_id} claimed {len(claims)} times:\n{logs}"

    # MLflow: exactly one run per event, the one the event names.
    for model, event_id in ids.items():
        experiment = mlflow_client.get_experiment_by_name(model)
        assert experiment is not None
        runs = mlflow_client.search_runs([experiment.experiment_id])
        assert len(runs) == 1, f"{model}: {len(runs)} MLflow runs for one event"
        assert runs[0].info.run_id == event(conn, event_id)["mlflow_run_id"]
        assert runs[0].data.params["event_id"] == str(event_id)
        assert len(mlflow_client.search_model_versions(f"name = '{model}'")) == 1
    retrain_rows = conn.execute(
        "SELECT model_name, count(*) FROM model_metrics WHERE source = 'retrain' "
        "GROUP BY model_name").fetchall()
    assert dict(retrain_rows) == {m: 1 for m in models}
    assert all(w.alive() for w in workers)


def test_a_killed_workers_event_is_taken_over_after_its_heartbeat_goes_stale(
        conn, start_worker, mlflow_client):
    model = "slow"
    insert_slow_model(conn, model)
    workers = [start_worker(wait_listening=False), start_worker(wait_listening=False)]
    for w in workers:
        w.wait_for_log("listening on channel", timeout=90)

    event_id = request_retrain(conn, model)
    running = wait_running(conn, event_id, workers)
    [victim] = [w for w in workers if w.owns(running["worker_id"])]
    [survivor] = [w for w in workers if w is not victim]
    victim.wait_for_log(rf"event {event_id}: loaded", timeout=30)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait_exit(10) == -signal.SIGKILL
    killed_at = time.monotonic()

    # Still running (heartbeat stale soon), then taken over and finished.
    assert event(conn, event_id)["status"] == "running"
    done = wait_event(conn, event_id, timeout=120, workers=workers)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2, done
    assert survivor.owns(done["worker_id"]), (done["worker_id"], survivor.pid)
    assert done["worker_id"] != running["worker_id"]
    assert survivor.count(rf"event {event_id} claimed: .* attempt 2/") == 1, survivor.log()
    # Taken over only once the heartbeat was stale (--stale-after 3).
    assert time.monotonic() - killed_at >= 2.5
    assert done["model_version"] is not None and done["promoted"] is True
    experiment = mlflow_client.get_experiment_by_name(model)
    runs = mlflow_client.search_runs([experiment.experiment_id])
    assert done["mlflow_run_id"] in [r.info.run_id for r in runs]
    assert survivor.alive()


def test_worker_reconnects_after_its_connections_are_terminated(conn, start_worker):
    worker = start_worker()
    wait_for(lambda: conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()").fetchone()[0] >= 1, 10, "the worker's connections")

    terminated = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert terminated >= 1

    worker.wait_for_log("reconnecting", timeout=20)
    worker.wait_for_log("listening on channel", count=2, timeout=30)
    assert worker.alive()

    model = "after_reconnect"
    insert_labelled(conn, model, 200, seed=5)
    insert_firing_row(conn, model)
    [recorded] = events(conn, model)
    done = wait_event(conn, recorded["id"], timeout=60, workers=[worker])
    assert done["status"] == "succeeded", done
    assert worker.owns(done["worker_id"])
    assert worker.alive()
    assert "Traceback" not in worker.log()


def test_sigterm_while_idle_exits_zero_quickly(conn, start_worker):
    worker = start_worker()
    sent = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(10) == 0, worker.log()
    assert time.monotonic() - sent < 5
    assert "Traceback" not in worker.log()


def test_sigterm_while_running_hands_the_event_back(conn, start_worker):
    model = "slow"
    insert_slow_model(conn, model)
    worker = start_worker()
    event_id = request_retrain(conn, model)
    wait_running(conn, event_id, [worker])
    worker.wait_for_log(rf"event {event_id}: loaded", timeout=30)

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(60) == 0, worker.log()
    assert "Traceback" not in worker.log()

    row = event(conn, event_id)
    assert row["status"] in ("pending", "succeeded"), row
    if row["status"] == "pending":
        assert row["worker_id"] is None, row
        # Not lost: the next worker runs it.
        successor = start_worker()
        done = wait_event(conn, event_id, timeout=90, workers=[worker, successor])
        assert done["status"] == "succeeded", done
        assert successor.owns(done["worker_id"])


def test_sigterm_while_running_and_waiting_on_the_database_hands_the_event_back(
        conn, db_url, start_worker):
    """Like the test above, but the signal arrives while the worker's main
    thread waits for a statement (here: loading the training rows, held up
    by a lock this test takes on training_data; in production a big load)."""
    model = "locked"
    insert_labelled(conn, model, 200, seed=9)
    event_id = request_retrain(conn, model)

    with psycopg.connect(db_url) as blocker:  # a transaction, until commit
        blocker.execute("LOCK TABLE training_data IN ACCESS EXCLUSIVE MODE")
        worker = start_worker()
        wait_running(conn, event_id, [worker])
        wait_until_blocked(conn, timeout=20)

        worker.proc.send_signal(signal.SIGTERM)
        worker.wait_for_log("received SIGTERM", timeout=10)
        time.sleep(1)  # the worker's chance to cancel or finish before the lock goes
        blocker.commit()

    assert worker.wait_exit(30) == 0, worker.log()
    assert "Traceback" not in worker.log()
    row = event(conn, event_id)
    symptom(row["status"] in ("pending", "succeeded"),
            f"event left {row['status']!r} by worker {row['worker_id']} after it exited:\n"
            + worker.log())


def test_a_worker_claims_due_events_while_training_data_is_locked(conn, db_url, start_worker):
    """A lock on training_data (an ALTER TABLE, a TRUNCATE in an open
    transaction) holds up what reads it: the drift refresh and the schedule
    check give up their round. The worker still claims the events that are
    due, and runs them once the lock goes."""
    model = "claimed-while-locked"
    insert_labelled(conn, model, 200, seed=10)
    set_policy(conn, model, schedule_interval="7 days", min_training_rows=50)
    event_id = request_retrain(conn, model)
    with psycopg.connect(db_url) as blocker:  # a transaction, until commit
        blocker.execute("LOCK TABLE training_data IN ACCESS EXCLUSIVE MODE")
        worker = start_worker()
        worker.wait_for_log("schedule check skipped", timeout=30)
        wait_running(conn, event_id, [worker], timeout=30)
        blocker.commit()
    wait_event(conn, event_id, statuses=("succeeded",), timeout=120, workers=[worker])
    assert "Traceback" not in worker.log()


def test_a_stalled_worker_that_lost_its_event_leaves_no_trace_in_mlflow(
        conn, start_worker, mlflow_client):
    """SPEC 5: no event is run by two workers at once. A worker frozen
    (SIGSTOP: a VM pause, a partition) past --stale-after loses its event to
    another worker; when it thaws it must not record a second outcome."""
    model = "stalled"
    insert_labelled(conn, model, 12_000, seed=8, label_noise=0.15, with_prediction=False)
    workers = [start_worker(wait_listening=False), start_worker(wait_listening=False)]
    for w in workers:
        w.wait_for_log("listening on channel", timeout=90)

    event_id = request_retrain(conn, model)
    running = wait_running(conn, event_id, workers)
    [stalled] = [w for w in workers if w.owns(running["worker_id"])]
    [other] = [w for w in workers if w is not stalled]
    stalled.wait_for_log(rf"event {event_id}: loaded", timeout=30)
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: other.owns(event(conn, event_id)["worker_id"]), 30,
                 "the other worker to take the event over", on_timeout=other.log)
    finally:
        os.kill(stalled.pid, signal.SIGCONT)

    done = wait_event(conn, event_id, timeout=120, workers=workers)
    assert done["status"] == "succeeded" and other.owns(done["worker_id"]), done
    assert done["attempts"] == 2
    # The thawed worker notices it lost the event and gives it up.
    stalled.wait_for_log(rf"event {event_id} .*leaving it to its new worker", timeout=90)
    assert stalled.alive() and other.alive()

    experiment = mlflow_client.get_experiment_by_name(model)
    runs = mlflow_client.search_runs([experiment.experiment_id])
    for_event = [r.info.run_id for r in runs if r.data.params.get("event_id") == str(event_id)]
    symptom(for_event == [done["mlflow_run_id"]],
            f"{len(for_event)} MLflow runs for event {event_id}:\n{stalled.log()}")
    symptom(done["champion_accuracy"] is None, "no champion existed before this event")
    symptom(str(mlflow_client.get_model_version_by_alias(model, "champion").version)
            == done["model_version"], "the champion alias is not on the event's version")


def test_sigterm_while_recording_an_outcome_that_waits_stops_the_worker(
        conn, db_url, start_worker):
    """Storing the new drift baseline waits while another transaction holds
    the model's baseline row (a drift refresh of it, here one left open):
    SIGTERM still stops the worker at once, and the event is left to be
    taken over, not lost."""
    from tests.helpers import wait_until_blocked

    conn.execute("UPDATE retrain_policies SET schedule_interval = NULL")
    model = "waiting"
    insert_labelled(conn, model, 300, seed=11)
    worker = start_worker()
    first = request_retrain(conn, model)
    assert wait_event(conn, first, workers=[worker])["status"] == "succeeded"  # a baseline now

    with psycopg.connect(db_url) as refresh:
        refresh.execute("SELECT FROM drift_baselines WHERE model_name = %s FOR UPDATE",
                        (model,))
        second = request_retrain(conn, model)
        wait_until_blocked(conn, timeout=60)
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait_exit(30) == 0, worker.log()
        assert time.monotonic() - started < 25  # not held until the other commits
        assert "Traceback" not in worker.log()
        refresh.commit()
    row = event(conn, second)
    assert row["status"] in ("running", "pending"), row
