"""SPEC section 5, "Promote": a challenger that scores worse than the
champion on the same holdout is registered but not promoted."""

from __future__ import annotations

import random
import re

import pytest

from tests.acceptance.support import wait_event
from tests.helpers import copy_rows

pytestmark = pytest.mark.slow


def _xor_rows(model: str, n: int, seed: int) -> list[tuple]:
    """A concept no straight line separates: "yes" when a and b have the
    same sign. Gradient boosting learns it; logistic regression cannot."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rnd.uniform(-1, 1), rnd.uniform(-1, 1)
        label = "yes" if a * b > 0 else "no"
        rows.append((model, {"a": round(a, 5), "b": round(b, 5)}, label, label, None))
    return rows


def test_a_worse_challenger_is_not_promoted(conn, start_worker, run_worker, mlflow_client):
    model = "promo"
    result = run_worker("policy", "set", model, "estimator=hist_gradient_boosting")
    assert result.returncode == 0, result.stderr
    worker = start_worker()

    # The champion: gradient boosting on 1000 rows of the concept.
    copy_rows(conn, _xor_rows(model, 1000, seed=11))
    first = wait_event(conn, int(re.search(r"event (\d+)", run_worker(
        "trigger", model).stdout).group(1)), timeout=60, workers=[worker])
    assert first["status"] == "succeeded" and first["promoted"] is True, first
    assert first["model_version"] == "1" and first["accuracy"] >= 0.9

    # The challenger may only be a logistic regression: a coin toss here.
    result = run_worker("policy", "set", model, "estimator=logistic_regression")
    assert result.returncode == 0, result.stderr
    assert re.search(r"estimator\s+logistic_regression", result.stdout), result.stdout
    copy_rows(conn, _xor_rows(model, 500, seed=12))
    triggered = run_worker("trigger", model)
    assert triggered.returncode == 0, triggered.stderr
    second_id = int(re.search(r"event (\d+)", triggered.stdout).group(1))

    second = wait_event(conn, second_id, timeout=60, workers=[worker])
    assert second["status"] == "succeeded", second
    assert second["promoted"] is False, second
    assert second["model_version"] == "2"
    assert second["champion_accuracy"] > second["accuracy"] + 0.2, second

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
