"""SPEC section 5, "Promote": a challenger that scores worse than the
champion on the same holdout is registered but not promoted."""

from __future__ import annotations

import re

import pytest

from tests.acceptance.support import (
    event,
    insert_firing_row,
    insert_labelled,
    wait_event,
)
from tests.helpers import events

pytestmark = pytest.mark.slow


def test_a_worse_challenger_is_not_promoted(conn, start_worker, run_worker, mlflow_client):
    model = "promo"
    worker = start_worker()

    # The champion learns the rule from 1000 clean rows.
    insert_labelled(conn, model, 1000, seed=11)
    insert_firing_row(conn, model)
    [first] = events(conn, model)
    first = wait_event(conn, first["id"], timeout=60, workers=[worker])
    assert first["status"] == "succeeded" and first["promoted"] is True, first
    assert first["model_version"] == "1"
    assert first["accuracy"] >= 0.95

    # The challenger may only look at the 60 newest rows before the holdout;
    # those are garbage (every label inverted), while the holdout (the newest
    # 20%: exactly the 300 clean rows of 1001 + 200 + 300) follows the rule.
    result = run_worker("policy", "set", model, "training_window=60")
    assert result.returncode == 0, result.stderr
    assert re.search(r"training_window\s+60", result.stdout), result.stdout
    insert_labelled(conn, model, 200, seed=12, invert=True)
    insert_labelled(conn, model, 300, seed=13)

    triggered = run_worker("trigger", model)
    assert triggered.returncode == 0, triggered.stderr
    second_id = int(re.search(r"event (\d+)", triggered.stdout).group(1))
    assert second_id != first["id"]

    second = wait_event(conn, second_id, timeout=60, workers=[worker])
    assert second["status"] == "succeeded", second
    assert second["promoted"] is False, second
    assert second["model_version"] == "2"
    assert second["rows_used"] == 60 + 300
    assert second["champion_accuracy"] is not None
    assert second["champion_accuracy"] > second["accuracy"], second
    assert second["champion_accuracy"] >= 0.95

    # The alias stays on version 1; version 2 exists, registered.
    assert str(mlflow_client.get_model_version_by_alias(model, "champion").version) == "1"
    assert str(mlflow_client.get_model_version(model, "2").version) == "2"
    champion = conn.execute(
        "SELECT champion_version FROM model_status WHERE model_name = %s", (model,)
    ).fetchone()[0]
    assert champion == "1"
    # The challenger's holdout score is still recorded.
    assert conn.execute(
        "SELECT model_version FROM model_metrics WHERE model_name = %s AND source = 'retrain' "
        "ORDER BY id", (model,)).fetchall() == [("1",), ("2",)]
    assert event(conn, first["id"])["status"] == "succeeded"
