"""Issue 14 part 4: a short chaos soak (bench/chaos.py) in the suite, and the
worker bugs the soak found, each reproduced on its own.

The soak runs real `worker listen` processes on the test's database and
MLflow store, SIGKILLs them (mostly while they train) and restarts them,
terminates their connections, and checks what SPEC section 5 promises: every
event ends succeeded, failed with an error, or cancelled into a newer pending
event; none is run by two workers at once; no MLflow run is lost or
orphaned; the champion alias is the database's champion.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import WORKER_TIMINGS
from tests.acceptance.support import (
    WorkerProcess,
    event,
    insert_labelled,
    request_retrain,
    symptom,
    wait_event,
    wait_for,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = str(Path(__file__).with_name("instrumented_worker.py"))


def load_chaos():
    spec = importlib.util.spec_from_file_location("pg_retrain_bench_chaos",
                                                  ROOT / "bench" / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------
# The short soak
# ---------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_short_chaos_soak_loses_nothing_and_runs_nothing_twice(db_url, tracking_uri, tmp_path):
    chaos = load_chaos()
    options = chaos.Options(
        workers=2, models=2, events=30, kills=3, terminations=1, restarts=0,
        rows=300, max_training_rows=2000, schedule_seconds=5, stale_after=3.0,
        drain_timeout=90, duration=150, seed=14,
        database_url=db_url, tracking_uri=tracking_uri, workdir=tmp_path / "chaos")
    started = time.monotonic()
    report = chaos.Soak(options).run()
    table = chaos.render(report)
    print(table)

    assert len(report.events) >= 30, table
    assert len(report.kills) == 3 and len(report.terminations) == 1, table
    # Every event finished, and how.
    assert report.drained and report.unfinished == [], table
    statuses = {e["status"] for e in report.events}
    assert statuses <= {"succeeded", "failed", "cancelled"}, table
    assert report.failed_without_error == [], table
    assert report.bad_cancelled == [], table
    assert sum(e["status"] == "succeeded" for e in report.events) > len(report.events) / 2, table
    # None ran twice at once, no run lost or orphaned, MLflow agrees.
    assert report.double == [], table
    assert report.lost == [], table
    assert report.orphans == [], table
    assert report.runs["recorded"] == sum(e["status"] == "succeeded" for e in report.events)
    assert report.disagreements == [], table
    assert all(code == 0 for _, _, code in report.stop_exits), table
    assert report.tracebacks == [], table
    assert report.ok, table
    print(f"soak: {time.monotonic() - started:.0f}s")


# ---------------------------------------------------------------------------
# Reproductions: instrumented workers (tests/acceptance/instrumented_worker.py)
# ---------------------------------------------------------------------------


@pytest.fixture
def start(worker_env, tmp_path):
    """start(pause=None, fault=None): ``worker listen`` with small timings,
    paused or broken at one step, as a WorkerProcess."""
    started: list[WorkerProcess] = []

    def run(pause: str | None = None, fault: str | None = None) -> WorkerProcess:
        environment = dict(worker_env, PYTHONPATH=str(ROOT))
        for key, value in (("PG_RETRAIN_TEST_PAUSE", pause), ("PG_RETRAIN_TEST_FAULT", fault)):
            if value:
                environment[key] = value
        log_path = tmp_path / f"instrumented-{len(started) + 1}.log"
        with open(log_path, "w") as handle:
            proc = subprocess.Popen([sys.executable, LAUNCHER, "listen", *WORKER_TIMINGS],
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


def _stop(worker: WorkerProcess) -> None:
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(60) == 0, worker.log()


def _runs(mlflow_client, model: str):
    experiment = mlflow_client.get_experiment_by_name(model)
    return mlflow_client.search_runs([experiment.experiment_id],
                                     order_by=["attributes.start_time ASC"])


def _unaccounted(conn, runs) -> list[str]:
    """Runs that no event records, not tagged abandoned and not KILLED: the
    soak's orphans."""
    recorded = {r[0] for r in conn.execute(
        "SELECT mlflow_run_id FROM retrain_events WHERE mlflow_run_id IS NOT NULL")}
    return [f"{r.info.run_id} ({r.info.status}, event {r.data.params.get('event_id')}, "
            f"attempt {r.data.tags.get('pg_retrain.attempt')})"
            for r in runs
            if r.info.run_id not in recorded
            and r.data.tags.get("pg_retrain.abandoned") != "true"
            and r.info.status != "KILLED"]


def test_runs_are_tagged_with_their_event_attempt_and_worker(start, conn, mlflow_client):
    insert_labelled(conn, "m", 200, seed=20)
    event_id = request_retrain(conn, "m")
    worker = start()
    done = wait_event(conn, event_id, timeout=120, workers=[worker])
    _stop(worker)
    [run] = _runs(mlflow_client, "m")
    assert run.info.run_id == done["mlflow_run_id"]
    assert run.data.tags["pg_retrain.event_id"] == str(event_id)
    assert run.data.tags["pg_retrain.attempt"] == "1"
    assert worker.owns(run.data.tags["pg_retrain.worker_id"])
    assert run.data.tags["pg_retrain.worker_id"] == done["worker_id"]


def test_a_run_whose_outcome_could_not_be_recorded_is_marked_abandoned(start, conn,
                                                                      mlflow_client):
    """Found by the soak: a connection terminated after the model was written
    to MLflow and before the outcome committed left a FINISHED run that no
    event records and nothing marks (the event was retried, or merged into
    a newer pending event, with a run of its own)."""
    insert_labelled(conn, "m", 200, seed=21)
    event_id = request_retrain(conn, "m")
    worker = start(fault="record:database")
    worker.wait_for_log("attempt 1 failed", timeout=90)
    _stop(worker)
    assert event(conn, event_id)["status"] == "pending"

    worker = start()
    done = wait_event(conn, event_id, timeout=120, workers=[worker])
    _stop(worker)
    assert done["status"] == "succeeded"
    first, second = _runs(mlflow_client, "m")
    assert second.info.run_id == done["mlflow_run_id"]
    symptom(first.data.tags.get("pg_retrain.abandoned") == "true",
            f"run {first.info.run_id} of attempt 1 is neither recorded nor marked abandoned")
    assert _unaccounted(conn, [first, second]) == []


def test_a_run_written_by_a_worker_killed_before_recording_is_marked_abandoned(
        start, conn, mlflow_client):
    """A worker SIGKILLed between writing its run and committing the outcome:
    the attempt that takes the event over marks the dead attempt's run."""
    insert_labelled(conn, "m", 200, seed=22)
    event_id = request_retrain(conn, "m")
    victim = start(pause="record:120")
    victim.wait_for_log("pausing in record", timeout=90)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait_exit(10)

    successor = start()
    done = wait_event(conn, event_id, timeout=120, workers=[successor])
    _stop(successor)
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    first, second = _runs(mlflow_client, "m")
    assert second.info.run_id == done["mlflow_run_id"]
    assert first.info.status == "FINISHED"
    symptom(first.data.tags.get("pg_retrain.abandoned") == "true",
            f"run {first.info.run_id} of the killed attempt is neither recorded nor marked")
    assert _unaccounted(conn, [first, second]) == []


def test_an_event_given_up_marks_the_run_of_its_dead_attempt(start, conn, mlflow_client):
    """The same, when the attempt that takes over finds the event out of
    attempts and fails it without retraining."""
    insert_labelled(conn, "m", 200, seed=23)
    conn.execute("INSERT INTO retrain_policies (model_name, max_attempts) VALUES ('m', 1)")
    event_id = request_retrain(conn, "m")
    victim = start(pause="record:120")
    victim.wait_for_log("pausing in record", timeout=90)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait_exit(10)

    successor = start()
    done = wait_event(conn, event_id, timeout=120, workers=[successor])
    _stop(successor)
    assert done["status"] == "failed" and "gave up" in done["error"], done
    [run] = _runs(mlflow_client, "m")
    symptom(run.data.tags.get("pg_retrain.abandoned") == "true",
            f"run {run.info.run_id} of the killed attempt is neither recorded nor marked")


def test_a_late_alias_move_does_not_undo_a_newer_promotion(start, conn, mlflow_client):
    """Worker A records promotion 1 and is slow to move the alias (waiting
    for the SQLite store's lock behind other workers' runs, a slow tracking
    server); meanwhile worker B retrains, records promotion 2 and moves the
    alias; then A's move lands. The alias must end on the database's
    champion, not on A's older version."""
    insert_labelled(conn, "m", 300, seed=24)
    first = request_retrain(conn, "m")
    slow = start(pause="alias:30")
    slow.wait_for_log("pausing in alias", timeout=90)
    paused_at = time.monotonic()
    assert event(conn, first)["status"] == "succeeded"

    # The concept flips: the newest rows (the holdout) are inverted, so the
    # next challenger beats version 1 and is promoted.
    insert_labelled(conn, "m", 300, seed=25, invert=True)
    second = request_retrain(conn, "m")
    fast = start()
    done = wait_event(conn, second, timeout=120, workers=[slow, fast])
    assert done["status"] == "succeeded" and done["promoted"], done
    assert time.monotonic() - paused_at < 30, "too slow: A's pause ended before B's promotion"

    def alias():
        try:
            return str(mlflow_client.get_model_version_by_alias("m", "champion").version)
        except Exception:
            return None

    wait_for(lambda: alias() == done["model_version"], 30, "B's alias move")
    # A's pause ends; its move must not put version 1 back.
    time.sleep(max(0.0, 30 - (time.monotonic() - paused_at)) + 5)
    _stop(slow)
    _stop(fast)
    [(recorded,)] = conn.execute(
        "SELECT champion_version FROM model_status WHERE model_name = 'm'").fetchall()
    assert recorded == done["model_version"]
    symptom(alias() == recorded,
            f"the champion alias is on version {alias()}, the database's champion is {recorded}")


def test_an_event_its_own_worker_finished_is_not_reported_taken_over(start_worker, conn):
    """Found by the soak: the heartbeat thread's beat that lands between the
    outcome's commit and the heartbeat's stop finds the event no longer
    running and logged "event N was taken over by another worker" for an
    event its own worker had just finished. Frequent heartbeats make that
    window easy to hit."""
    insert_labelled(conn, "m", 120, seed=26)
    worker = start_worker("--heartbeat-interval", "0.005")
    ids = []
    for _ in range(12):
        ids.append(request_retrain(conn, "m"))
        wait_event(conn, ids[-1], timeout=60, workers=[worker])
    assert [event(conn, i)["status"] for i in ids] == ["succeeded"] * len(ids)
    _stop(worker)
    symptom(worker.count(r"was taken over by another worker") == 0,
            "events reported taken over although no other worker runs:\n" + worker.log())
