"""SPEC sections 4 and 5 end to end: ETL writes rows, a trigger records an
event and notifies, a running `worker listen` retrains, and the outcome is
in the tables, in MLflow and in the CLI. Also `worker run-once`."""

from __future__ import annotations

import pytest

from tests.acceptance.support import (
    KnownBug,
    insert_firing_row,
    insert_labelled,
    symptom,
    wait_event,
)
from tests.helpers import events

pytestmark = pytest.mark.slow


def test_listen_retrains_on_a_firing_row_and_tracks_everything(
        conn, start_worker, run_worker, mlflow_client):
    model = "churn"
    worker = start_worker()

    insert_labelled(conn, model, 400, seed=1)
    assert events(conn, model) == [], "clean rows (4% prediction errors) must not fire"
    insert_firing_row(conn, model, error_rate=0.5)
    [recorded] = events(conn, model)
    assert recorded["reason"] == "error_rate"

    done = wait_event(conn, recorded["id"], timeout=90, workers=[worker])
    assert done["status"] == "succeeded", done
    assert done["error"] is None
    assert done["attempts"] == 1
    assert worker.owns(done["worker_id"]), done["worker_id"]
    assert done["mlflow_run_id"]
    assert done["model_version"] == "1"
    assert done["promoted"] is True
    assert done["champion_accuracy"] is None
    assert done["accuracy"] is not None and done["accuracy"] >= 0.9, done["accuracy"]
    assert 0 < done["rows_used"] <= 401
    assert done["started_at"] <= done["finished_at"]

    metric_rows = conn.execute(
        "SELECT model_version, accuracy FROM model_metrics "
        "WHERE model_name = %s AND source = 'retrain'", (model,)).fetchall()
    assert metric_rows == [("1", pytest.approx(done["accuracy"]))]

    # MLflow: experiment named after the model, the run, its metric, the
    # registered version 1 and the champion alias on it.
    experiment = mlflow_client.get_experiment_by_name(model)
    assert experiment is not None, "no MLflow experiment named after the model"
    runs = mlflow_client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [done["mlflow_run_id"]]
    assert runs[0].data.metrics["model_accuracy"] == pytest.approx(done["accuracy"])
    version = mlflow_client.get_model_version(model, "1")
    assert version.run_id == done["mlflow_run_id"]
    assert str(mlflow_client.get_model_version_by_alias(model, "champion").version) == "1"

    # The CLI reads the same facts back (the two MLflow commands side by side).
    got, listed = run_worker.many(
        ["metrics", "get", "model_accuracy", "--model", model],
        ["metrics", "list", "--model", model],
    )
    assert got.returncode == 0, got.stderr
    assert float(got.stdout.strip()) == pytest.approx(done["accuracy"], abs=1e-5)
    assert listed.returncode == 0, listed.stderr
    assert "model_accuracy" in listed.stdout.split()

    status = run_worker("status")
    assert status.returncode == 0, status.stderr
    model_lines = [line for line in status.stdout.splitlines() if line.startswith(model)]
    assert model_lines, status.stdout
    assert "succeeded" in model_lines[0], status.stdout

    assert worker.alive()


def test_run_once_runs_events_recorded_while_no_worker_ran(conn, run_worker, mlflow_client):
    ids = []
    for model in ("alpha", "beta"):
        insert_labelled(conn, model, 200, seed=hash(model) % 1000)
        insert_firing_row(conn, model)
        [recorded] = events(conn, model)
        ids.append(recorded["id"])

    result = run_worker("run-once", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    for event_id, model in zip(ids, ("alpha", "beta")):
        [row] = [e for e in events(conn, model) if e["id"] == event_id]
        assert row["status"] == "succeeded", (row, result.stderr)
        assert row["attempts"] == 1
        assert row["model_version"] == "1" and row["promoted"] is True
        experiment = mlflow_client.get_experiment_by_name(model)
        assert len(mlflow_client.search_runs([experiment.experiment_id])) == 1
    assert events(conn, status="pending") == [] and events(conn, status="running") == []


def test_a_model_name_the_database_accepts_is_retrained(conn, run_worker, mlflow_client):
    model = "fraud/eu:v2"  # training_data accepts any non-empty text
    insert_labelled(conn, model, 200, seed=21)
    insert_firing_row(conn, model)
    [recorded] = events(conn, model)

    result = run_worker("run-once", timeout=120)
    [row] = events(conn, model)
    symptom(row["status"] == "succeeded", f"{row['status']}: {row['error']}\n{result.stderr}")
    assert result.returncode == 0, result.stderr
    assert row["attempts"] == 1
    experiment = mlflow_client.get_experiment_by_name(model)
    assert len(mlflow_client.search_runs([experiment.experiment_id])) == 1
