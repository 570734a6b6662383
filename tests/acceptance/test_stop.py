"""Issue 14: a clean stop at any moment, tracebacks for the unexpected, and
MLflow's champion alias agreeing with the database.

Real `worker` processes, run through tests/acceptance/instrumented_worker.py,
which pauses (or breaks) one step so that a signal lands in it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import WORKER_TIMINGS
from tests.acceptance.support import (
    WorkerProcess,
    event,
    insert_labelled,
    request_retrain,
    wait_event,
)
from tests.helpers import events

pytestmark = pytest.mark.slow

LAUNCHER = str(Path(__file__).with_name("instrumented_worker.py"))
ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def start(worker_env, tmp_path):
    """start(*args, pause=None, fault=None, env=None): the instrumented worker
    (default command: listen with small timings) as a WorkerProcess."""
    started: list[WorkerProcess] = []

    def run(*args, pause: str | None = None, fault: str | None = None,
            env: dict | None = None) -> WorkerProcess:
        environment = dict(worker_env, PYTHONPATH=ROOT)
        environment.update(env or {})
        for key, value in (("PG_RETRAIN_TEST_PAUSE", pause), ("PG_RETRAIN_TEST_FAULT", fault)):
            if value:
                environment[key] = value
        environment = {k: v for k, v in environment.items() if v is not None}
        log_path = tmp_path / f"instrumented-{len(started) + 1}.log"
        with open(log_path, "w") as handle:
            proc = subprocess.Popen([sys.executable, LAUNCHER, *(args or ("listen", *WORKER_TIMINGS))],
                                    cwd=tmp_path, env=environment, stdout=handle,
                                    stderr=subprocess.STDOUT)
        worker = WorkerProcess(proc, log_path)
        started.append(worker)
        return worker

    yield run
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=10)
        print(f"----- {worker.log_path.name} (exit {worker.proc.returncode}) -----")
        print(worker.log())


def _stop(worker: WorkerProcess, sig=signal.SIGTERM) -> None:
    worker.proc.send_signal(sig)
    assert worker.wait_exit(60) == 0, worker.log()
    assert "Traceback" not in worker.log(), worker.log()


# ---------------------------------------------------------------------------
# A signal in each phase: exit 0, nothing lost, nothing left running
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_zero(start, sig):
    import time

    worker = start()
    time.sleep(0.3)  # importing click, psycopg, then MLflow: not listening yet
    _stop(worker, sig)
    assert "listening on channel" not in worker.log()


def test_a_signal_while_the_embedded_server_starts_and_migrates_exits_zero(start, tmp_path):
    """The server's start and the migration finish; the next command finds
    a database that works."""
    home = tmp_path / "home"
    embedded_env = {"PG_RETRAIN_HOME": str(home), "DATABASE_URL": None,
                    "MLFLOW_TRACKING_URI": None}
    try:
        for step in ("embedded", "migration"):
            worker = start(pause=f"{step}:3", env=embedded_env)
            worker.wait_for_log(f"pausing in {step}", timeout=120)
            _stop(worker)
        status = start("status", env=embedded_env)
        assert status.wait_exit(120) == 0, status.log()
        assert "database:" in status.log()
    finally:
        stop = start("db", "stop", env=embedded_env)
        stop.wait_exit(60)


def test_a_signal_while_waiting_exits_zero(start):
    worker = start()
    worker.wait_for_log("listening on channel", timeout=60)
    _stop(worker)


def test_a_signal_while_training_hands_the_event_back(start, conn):
    insert_labelled(conn, "m", 200, seed=1)
    event_id = request_retrain(conn, "m")
    worker = start(pause="training:30")
    worker.wait_for_log("pausing in training", timeout=60)
    _stop(worker)
    row = event(conn, event_id)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("pending", 0, None)


def test_a_signal_while_writing_to_mlflow_finishes_the_retrain(start, conn, mlflow_client):
    """Writing the model to MLflow is not cut in the middle: the retrain is
    recorded, and the champion alias follows the database."""
    insert_labelled(conn, "m", 200, seed=2)
    event_id = request_retrain(conn, "m")
    worker = start(pause="mlflow:3")
    worker.wait_for_log("pausing in mlflow", timeout=60)
    _stop(worker)
    row = event(conn, event_id)
    assert row["status"] == "succeeded" and row["promoted"], row
    assert str(mlflow_client.get_model_version_by_alias("m", "champion").version) == row["model_version"]
    assert [r.info.status for r in mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("m").experiment_id])] == ["FINISHED"]


def test_a_signal_while_recording_hands_the_event_back_and_marks_the_run(start, conn,
                                                                          mlflow_client):
    insert_labelled(conn, "m", 200, seed=3)
    event_id = request_retrain(conn, "m")
    worker = start(pause="record:30")
    worker.wait_for_log("pausing in record", timeout=60)
    _stop(worker)
    row = event(conn, event_id)
    assert row["status"] == "pending", row
    [run] = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("m").experiment_id])
    assert run.data.tags.get("pg_retrain.abandoned") == "true"
    # Nothing was promoted, so no alias; the next worker runs the event.
    with pytest.raises(Exception):
        mlflow_client.get_model_version_by_alias("m", "champion")
    worker = start()
    done = wait_event(conn, event_id, timeout=120, workers=[worker])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    _stop(worker)


# ---------------------------------------------------------------------------
# Tracebacks for bugs, one line for the rest
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_bug_is_logged_with_its_traceback_and_the_event_keeps_one_line(start, conn,
                                                                         log_format):
    insert_labelled(conn, "m", 200, seed=4)
    conn.execute("INSERT INTO retrain_policies (model_name, max_attempts) VALUES ('m', 1)")
    event_id = request_retrain(conn, "m")
    worker = start("--log-format", log_format, "listen", *WORKER_TIMINGS, fault="training:bug")
    done = wait_event(conn, event_id, timeout=60, workers=[worker])
    assert done["status"] == "failed"
    assert done["error"].startswith("ZeroDivisionError: injected bug")
    assert "\n" not in done["error"]
    _stop_tolerating_traceback(worker)
    log = worker.log()
    if log_format == "text":
        assert "Traceback (most recent call last)" in log
        assert 'in _hook' in log
    else:
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        [bug] = [e for e in entries if "traceback" in e]
        assert bug["level"] == "error" and "ZeroDivisionError" in bug["traceback"]
        assert "Traceback (most recent call last)" in bug["traceback"]


def test_a_failed_training_a_user_can_fix_is_one_line(start, conn):
    insert_labelled(conn, "m", 10, seed=5)    # too few rows for min_training_rows=50
    event_id = request_retrain(conn, "m")
    worker = start()
    done = wait_event(conn, event_id, timeout=60, workers=[worker])
    assert done["status"] == "failed" and "too few" in done["error"]
    _stop(worker)


def _stop_tolerating_traceback(worker: WorkerProcess) -> None:
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(60) == 0, worker.log()


# ---------------------------------------------------------------------------
# MLflow and the database agree
# ---------------------------------------------------------------------------


def _versions(conn, mlflow_client, model):
    recorded = conn.execute("SELECT champion_version FROM model_status WHERE model_name = %s",
                            (model,)).fetchone()[0]
    try:
        alias = str(mlflow_client.get_model_version_by_alias(model, "champion").version)
    except Exception:
        alias = None
    return recorded, alias


def test_a_failed_commit_after_mlflow_was_written_leaves_them_agreeing(start, conn,
                                                                      mlflow_client):
    insert_labelled(conn, "m", 200, seed=6)
    first = request_retrain(conn, "m")
    worker = start(fault="record:database")
    worker.wait_for_log("attempt 1 failed", timeout=60)
    _stop(worker)
    assert event(conn, first)["status"] == "pending"
    assert _versions(conn, mlflow_client, "m") == (None, None)   # nothing promoted anywhere

    worker = start()
    assert wait_event(conn, first, timeout=120, workers=[worker])["status"] == "succeeded"
    _stop(worker)
    recorded, alias = _versions(conn, mlflow_client, "m")
    assert recorded == alias == "2"   # version 1 was written, never recorded


def test_a_worker_that_dies_before_moving_the_alias_is_reconciled(start, conn, mlflow_client):
    insert_labelled(conn, "m", 200, seed=7)
    first = request_retrain(conn, "m")
    worker = start(fault="alias:exit")
    assert worker.wait_exit(120) == 9, worker.log()
    assert event(conn, first)["status"] == "succeeded"
    assert _versions(conn, mlflow_client, "m") == ("1", None)     # recorded, alias not moved

    worker = start()   # reconciles on start
    worker.wait_for_log("champion alias moved from version None to 1", timeout=60)
    _stop(worker)
    assert _versions(conn, mlflow_client, "m") == ("1", "1")
