"""SPEC section 5, "Fail well": data a model cannot be trained on ends the
event as `failed` with a readable `error`, and the worker goes on."""

from __future__ import annotations

import pytest

from tests.acceptance.support import (
    event,
    insert_firing_row,
    insert_labelled,
    wait_event,
)
from tests.helpers import events

pytestmark = pytest.mark.slow


def record(conn, model: str) -> int:
    insert_firing_row(conn, model)
    [recorded] = events(conn, model)
    return recorded["id"]


def assert_failed_readably(row: dict, *words: str) -> None:
    assert row["status"] == "failed", row
    error = row["error"] or ""
    for word in words:
        assert word in error.lower(), f"error {error!r} does not mention {word!r}"
    assert "\n" not in error and "Traceback" not in error, error
    assert row["finished_at"] is not None
    assert row["mlflow_run_id"] is None and row["model_version"] is None
    assert row["promoted"] is None


def test_untrainable_events_fail_readably_and_the_worker_goes_on(conn, start_worker,
                                                                 mlflow_client):
    worker = start_worker()

    # One class only: every label "yes" (firing row included).
    insert_labelled(conn, "one_class", 120, seed=3, label="yes")
    one_class = wait_event(conn, record(conn, "one_class"), timeout=60, workers=[worker])
    assert_failed_readably(one_class, "one class")
    assert one_class["attempts"] == 1, "one class cannot pass by retrying"
    assert worker.alive()

    # Too few rows: 10 + the firing row, below min_training_rows (50).
    insert_labelled(conn, "tiny", 10, seed=4)
    tiny = wait_event(conn, record(conn, "tiny"), timeout=60, workers=[worker])
    assert_failed_readably(tiny, "too few")
    assert "50" in tiny["error"], tiny["error"]
    assert worker.alive()

    # The worker still runs the next, good event.
    insert_labelled(conn, "good", 200, seed=5)
    good = wait_event(conn, record(conn, "good"), timeout=60, workers=[worker])
    assert good["status"] == "succeeded", good
    assert good["model_version"] == "1"
    assert worker.alive()

    assert conn.execute(
        "SELECT array_agg(DISTINCT model_name)::text[] FROM model_metrics WHERE source = 'retrain'"
    ).fetchone()[0] == ["good"]
    assert mlflow_client.search_model_versions("name = 'one_class'") == []
    assert "Traceback" not in worker.log()


def test_run_once_exits_non_zero_when_an_event_failed(conn, run_worker):
    insert_labelled(conn, "one_class", 120, seed=3, label="yes")
    failing = record(conn, "one_class")
    insert_labelled(conn, "good", 200, seed=5)
    succeeding = record(conn, "good")

    result = run_worker("run-once", timeout=120)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr

    assert_failed_readably(event(conn, failing), "one class")
    # The failure did not stop the other due event from running.
    assert event(conn, succeeding)["status"] == "succeeded", result.stderr
