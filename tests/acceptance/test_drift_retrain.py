"""SPEC section 6 end to end: a running `worker listen` computes drift
itself, its monitor fires `drift_and_accuracy` when the inputs move and the
served predictions get worse, a retrain follows, and the baseline moves with
it so that the new distribution no longer reports drift (no storms).

The label depends on z only; x is the feature that moves (covariate shift).
"""

from __future__ import annotations

import random

import pytest

from tests.acceptance.support import request_retrain, wait_event, wait_for
from tests.helpers import copy_rows, events, set_policy

pytestmark = pytest.mark.slow

MODEL = "drifty"


def rows(n: int, seed: int, *, x_mean: float, wrong_share: float) -> list[tuple]:
    """Rows for copy_rows: x ~ N(x_mean, 1), z ~ N(0, 1), a color; the label
    is "yes" when z > 0; the served prediction is wrong on exactly
    ``wrong_share`` of the rows (the first k of every 20)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        z = rnd.gauss(0, 1)
        features = {"x": rnd.gauss(x_mean, 1), "z": z,
                    "color": rnd.choice(("red", "green", "blue"))}
        label = "yes" if z > 0 else "no"
        wrong = (i % 20) < round(wrong_share * 20)
        prediction = ("no" if label == "yes" else "yes") if wrong else label
        out.append((MODEL, features, label, prediction, None))
    return out


def baseline_of(conn) -> tuple | None:
    return conn.execute(
        "SELECT event_id, model_version, recent_rows FROM drift_baselines WHERE model_name = %s",
        (MODEL,)).fetchone()


def monitor_rows(conn, after_id: int = 0) -> list[tuple]:
    return conn.execute(
        "SELECT id, model_version, accuracy, drift_score FROM model_metrics "
        "WHERE model_name = %s AND source = 'monitor' AND id > %s ORDER BY id",
        (MODEL, after_id)).fetchall()


def drift_then_retrain(conn, worker) -> dict:
    """Train a first model, shift x by 2 sd with predictions 85% right, and
    wait for the monitor's drift_and_accuracy event and its retrain.
    Returns the drift event once it succeeded."""
    # Only the drift conditions can fire: the served predictions' error rate
    # (15%) stays under error_rate_threshold, accuracy 0.85 is over
    # min_accuracy, and accuracy_drop is out of reach.
    set_policy(conn, MODEL, schedule_interval=None, cooldown="0", error_rate_threshold=0.5,
               min_accuracy=0.5, accuracy_drop_tolerance=1.0)

    copy_rows(conn, rows(600, seed=1, x_mean=0.0, wrong_share=0.05))
    first = wait_event(conn, request_retrain(conn, MODEL), timeout=60, workers=[worker])
    assert first["status"] == "succeeded", first
    assert baseline_of(conn)[:2] == (first["id"], first["model_version"])
    assert events(conn, MODEL) == [first], "the first model's data must not fire anything"

    copy_rows(conn, rows(300, seed=2, x_mean=2.0, wrong_share=0.15))

    def drift_event():
        found = [e for e in events(conn, MODEL) if e["id"] != first["id"]]
        return found[0] if found else None

    fired = wait_for(drift_event, 15, "the monitor to record a drift event", on_timeout=worker.log)
    assert fired["reason"] == "drift_and_accuracy", fired
    assert fired["reasons"] == ["drift_and_accuracy"], fired
    observed = fired["details"]["drift_and_accuracy"]["first"]
    assert observed["drift_score"] > 0.25
    assert observed["accuracy"] == pytest.approx(0.85)
    [monitor] = monitor_rows(conn)
    assert monitor[0] == observed["metric_id"]
    assert monitor[1] == first["model_version"]       # measured against the old baseline

    done = wait_event(conn, fired["id"], timeout=60, workers=[worker])
    assert done["status"] == "succeeded", done
    assert done["model_version"] == "2"
    # The baseline moved with the retrain.
    assert baseline_of(conn)[:2] == (done["id"], "2")
    return done


def test_monitor_fires_drift_and_accuracy_and_a_retrain_follows(conn, start_worker):
    worker = start_worker()
    done = drift_then_retrain(conn, worker)
    assert worker.count(r"drift monitor: model drifty") >= 1
    assert [e["status"] for e in events(conn, MODEL)] == ["succeeded", "succeeded"]
    assert done["reason"] == "drift_and_accuracy"
    assert worker.alive()


def test_after_the_drift_retrain_the_new_distribution_reports_no_drift(conn, start_worker):
    worker = start_worker()
    done = drift_then_retrain(conn, worker)
    last_monitor = max([r[0] for r in monitor_rows(conn)], default=0)

    # More rows from where the inputs are now, served as well (and as badly)
    # as before: no drift against the new baseline, hence no new event.
    copy_rows(conn, rows(300, seed=3, x_mean=2.0, wrong_share=0.15))
    [(_, version, accuracy, score)] = wait_for(
        lambda: monitor_rows(conn, last_monitor), 15,
        "a monitor row against the new baseline", on_timeout=worker.log)
    drift = dict(conn.execute(
        "SELECT feature, psi FROM feature_drift WHERE model_name = %s", (MODEL,)).fetchall())
    assert version == "2"
    assert accuracy == pytest.approx(0.85)
    assert drift["x"] < 0.25, drift
    assert score < 0.25, (score, drift, done["rows_used"])
    assert [e["id"] for e in events(conn, MODEL)][-1] == done["id"], "a drift storm"
