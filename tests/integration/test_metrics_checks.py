"""SPEC section 2, the model_metrics checks: `performance`, `accuracy_drop`,
`drift_and_accuracy`, `drift`; reason order; retrain rows never fire."""

import pytest

from tests.helpers import (
    events,
    finish_retrain,
    insert_metric,
    only_event,
    set_policy,
)


def _update_metric(conn, metric_id, **values):
    # Column names come from this test module only; values go as parameters.
    assignments = ", ".join(f"{column} = %s" for column in values)
    conn.execute(
        f"UPDATE model_metrics SET {assignments} WHERE id = %s",
        [*values.values(), metric_id],
    )


# ---------------------------------------------------------------------------
# performance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accuracy", "fires"), [(0.79, True), (0.7999999, True), (0.8, False), (0.95, False)]
)
def test_performance_below_min_accuracy(conn, accuracy, fires):
    metric_id = insert_metric(conn, "m", accuracy=accuracy)
    if not fires:
        assert events(conn) == []
        return
    event = only_event(conn, "m")
    assert event["reason"] == "performance"
    assert event["reasons"] == ["performance"]
    detail = event["details"]["performance"]
    assert detail["count"] == 1
    assert detail["first"] == {"accuracy": accuracy, "min_accuracy": 0.8, "metric_id": metric_id}


@pytest.mark.parametrize(("source", "fires"), [("external", True), ("monitor", True),
                                               ("retrain", False)])
def test_performance_by_source(conn, source, fires):
    insert_metric(conn, "m", accuracy=0.79, source=source)
    assert [e["reason"] for e in events(conn)] == (["performance"] if fires else [])


def test_performance_on_update(conn):
    metric_id = insert_metric(conn, "m", accuracy=0.82)
    assert events(conn) == []
    _update_metric(conn, metric_id, accuracy=0.79)  # a drop of 0.03: performance only
    event = only_event(conn, "m")
    assert event["reasons"] == ["performance"]
    assert event["details"]["performance"]["first"]["metric_id"] == metric_id


def test_min_accuracy_comes_from_the_models_policy(conn):
    set_policy(conn, "picky", min_accuracy=0.9)
    insert_metric(conn, "picky", accuracy=0.85)
    insert_metric(conn, "relaxed", accuracy=0.85)
    event = only_event(conn)
    assert event["model_name"] == "picky"
    assert event["details"]["performance"]["first"]["min_accuracy"] == 0.9


# ---------------------------------------------------------------------------
# accuracy_drop
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("new", "fires"), [(0.84, True), (0.86, False), (0.85, False)])
def test_accuracy_drop_on_update_against_old_value(conn, new, fires):
    metric_id = insert_metric(conn, "m", accuracy=0.9)
    _update_metric(conn, metric_id, accuracy=new)
    if not fires:
        assert events(conn) == []
        return
    event = only_event(conn, "m")
    assert event["reason"] == "accuracy_drop"
    assert event["reasons"] == ["accuracy_drop"]
    assert event["details"]["accuracy_drop"]["first"] == {
        "accuracy": new, "previous_accuracy": 0.9, "tolerance": 0.05, "metric_id": metric_id,
    }


def test_update_of_drift_only_does_not_compare_accuracy(conn):
    metric_id = insert_metric(conn, "m", accuracy=0.9, drift_score=0.0)
    _update_metric(conn, metric_id, drift_score=0.1)
    assert events(conn) == []


@pytest.mark.parametrize(("new", "fires"), [(0.84, True), (0.86, False)])
def test_accuracy_drop_on_insert_against_previous_row(conn, new, fires):
    first = insert_metric(conn, "m", accuracy=0.9)
    second = insert_metric(conn, "m", accuracy=new)
    if not fires:
        assert events(conn) == []
        return
    detail = only_event(conn, "m")["details"]["accuracy_drop"]["first"]
    assert detail["previous_accuracy"] == 0.9
    assert detail["accuracy"] == new
    assert detail["metric_id"] == second != first


def test_accuracy_drop_compares_with_the_newest_earlier_row_not_an_older_one(conn):
    insert_metric(conn, "m", accuracy=0.95)
    insert_metric(conn, "m", accuracy=0.9)   # exactly the tolerance below: no drop
    insert_metric(conn, "m", accuracy=0.86)  # 0.04 below 0.9 (0.09 below 0.95)
    assert events(conn) == []


def test_accuracy_drop_on_insert_ignores_other_sources_and_models(conn):
    insert_metric(conn, "m", accuracy=0.95, source="monitor")
    insert_metric(conn, "other", accuracy=0.99)
    insert_metric(conn, "m", accuracy=0.86, source="external")  # first external row of m
    insert_metric(conn, "m", accuracy=0.99, source="retrain")
    insert_metric(conn, "m", accuracy=0.85, source="external")  # vs 0.86 external, not 0.99
    assert events(conn) == []
    monitor = insert_metric(conn, "m", accuracy=0.8, source="monitor")  # vs 0.95 monitor
    event = only_event(conn, "m")
    assert event["reasons"] == ["accuracy_drop"]
    detail = event["details"]["accuracy_drop"]["first"]
    assert detail["previous_accuracy"] == 0.95
    assert detail["metric_id"] == monitor


def test_accuracy_drop_skips_earlier_rows_without_accuracy(conn):
    insert_metric(conn, "m", accuracy=0.9)
    insert_metric(conn, "m", drift_score=0.01)
    insert_metric(conn, "m", accuracy=0.84)
    assert only_event(conn, "m")["details"]["accuracy_drop"]["first"]["previous_accuracy"] == 0.9


@pytest.mark.parametrize(("new", "fires"), [(0.89, True), (0.91, False)])
@pytest.mark.parametrize("source", ["external", "monitor"])
def test_accuracy_drop_against_champion_training_accuracy(conn, new, fires, source):
    finish_retrain(conn, "m", promoted=True, accuracy=0.95)
    metric_id = insert_metric(conn, "m", accuracy=new, source=source)
    if not fires:
        assert events(conn, status="pending") == []
        return
    pending = events(conn, "m", status="pending")
    assert len(pending) == 1
    event = pending[0]
    assert event["reasons"] == ["accuracy_drop"]
    assert event["details"]["accuracy_drop"]["first"] == {
        "accuracy": new, "champion_accuracy": 0.95, "tolerance": 0.05, "metric_id": metric_id,
    }


@pytest.mark.parametrize(("new", "fires"), [(0.79, True), (0.82, False)])
def test_champion_is_the_latest_succeeded_promoted_event(conn, new, fires):
    set_policy(conn, "m", min_accuracy=0.5)  # keep performance out of the way
    finish_retrain(conn, "m", promoted=True, accuracy=0.95, finished_ago="3 days")
    finish_retrain(conn, "m", promoted=True, accuracy=0.85, finished_ago="2 days")
    finish_retrain(conn, "m", promoted=False, accuracy=0.99, finished_ago="1 day")
    finish_retrain(conn, "m", status="failed", accuracy=0.99, finished_ago="1 hour")
    insert_metric(conn, "m", accuracy=new)
    pending = events(conn, "m", status="pending")
    if not fires:
        assert pending == []
        return
    assert len(pending) == 1
    assert pending[0]["details"]["accuracy_drop"]["first"]["champion_accuracy"] == 0.85


# ---------------------------------------------------------------------------
# drift_and_accuracy and drift
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drift", "accuracy", "fires"),
    [
        (0.3, 0.85, True),   # the reference scenario
        (0.3, 0.95, False),  # accuracy fine
        (0.1, 0.85, False),  # no drift
        (0.25, 0.85, False),  # drift exactly at the threshold
        (0.3, 0.9, False),   # accuracy exactly at combined_max_accuracy
    ],
)
def test_drift_and_accuracy_reference_scenarios(conn, drift, accuracy, fires):
    metric_id = insert_metric(conn, "m", accuracy=accuracy, drift_score=drift)
    if not fires:
        assert events(conn) == []
        return
    event = only_event(conn, "m")
    assert event["reason"] == "drift_and_accuracy"
    assert event["reasons"] == ["drift_and_accuracy"]
    detail = event["details"]["drift_and_accuracy"]["first"]
    assert detail["drift_score"] == drift
    assert detail["drift_threshold"] == 0.25
    assert detail["accuracy"] == accuracy
    assert detail["combined_max_accuracy"] == 0.9
    assert detail["metric_id"] == metric_id


def test_drift_only_row_takes_the_newest_accuracy(conn):
    insert_metric(conn, "m", accuracy=0.95)
    newest = insert_metric(conn, "m", accuracy=0.85, source="monitor")
    assert events(conn) == []
    drift_row = insert_metric(conn, "m", drift_score=0.3)
    detail = only_event(conn, "m")["details"]["drift_and_accuracy"]["first"]
    assert detail["accuracy"] == 0.85
    assert detail["accuracy_metric_id"] == newest
    assert detail["drift_metric_id"] == drift_row
    assert detail["metric_id"] == drift_row


def test_drift_only_row_ignores_accuracy_from_before_the_last_retrain(conn):
    insert_metric(conn, "m", accuracy=0.85)
    insert_metric(conn, "m", accuracy=0.95, source="retrain")
    insert_metric(conn, "m", drift_score=0.3)  # accuracy since the retrain: 0.95
    assert events(conn) == []


def test_drift_only_row_takes_accuracy_recorded_after_the_retrain(conn):
    insert_metric(conn, "m", accuracy=0.85)
    insert_metric(conn, "m", accuracy=0.95, source="retrain")
    after = insert_metric(conn, "m", accuracy=0.86)
    assert events(conn) == []
    insert_metric(conn, "m", drift_score=0.3)
    detail = only_event(conn, "m")["details"]["drift_and_accuracy"]["first"]
    assert detail["accuracy"] == 0.86
    assert detail["accuracy_metric_id"] == after


def test_accuracy_only_row_takes_the_newest_drift(conn):
    drift_row = insert_metric(conn, "m", drift_score=0.3)
    assert events(conn) == []  # drift_alone is off by default
    acc_row = insert_metric(conn, "m", accuracy=0.85)
    detail = only_event(conn, "m")["details"]["drift_and_accuracy"]["first"]
    assert detail["drift_score"] == 0.3
    assert detail["drift_metric_id"] == drift_row
    assert detail["accuracy_metric_id"] == acc_row


def test_accuracy_only_row_ignores_drift_from_before_the_last_retrain(conn):
    insert_metric(conn, "m", drift_score=0.3)
    insert_metric(conn, "m", accuracy=0.95, source="retrain")
    insert_metric(conn, "m", accuracy=0.85)
    assert events(conn) == []


def test_accuracy_update_combines_with_newest_drift(conn):
    insert_metric(conn, "m", drift_score=0.3)
    metric_id = insert_metric(conn, "m", accuracy=0.92)
    assert events(conn) == []
    _update_metric(conn, metric_id, accuracy=0.88)  # a 0.04 drop: no accuracy_drop
    event = only_event(conn, "m")
    assert event["reasons"] == ["drift_and_accuracy"]


@pytest.mark.parametrize(
    ("drift_alone", "drift", "accuracy", "expected"),
    [
        (True, 0.3, None, ["drift"]),
        (False, 0.3, None, []),
        (True, 0.25, None, []),
        (True, 0.3, 0.95, ["drift"]),
        (True, 0.3, 0.85, ["drift_and_accuracy"]),  # drift only when combined did not
    ],
)
def test_drift_alone(conn, drift_alone, drift, accuracy, expected):
    set_policy(conn, "m", drift_alone=drift_alone)
    metric_id = insert_metric(conn, "m", accuracy=accuracy, drift_score=drift)
    rows = events(conn)
    assert [e["reasons"] for e in rows] == ([expected] if expected else [])
    if expected == ["drift"]:
        assert rows[0]["reason"] == "drift"
        assert rows[0]["details"]["drift"]["first"] == {
            "drift_score": drift, "drift_threshold": 0.25, "metric_id": metric_id,
        }


def test_drift_alone_does_not_fire_when_combined_fires_from_an_earlier_accuracy(conn):
    set_policy(conn, "m", drift_alone=True)
    insert_metric(conn, "m", accuracy=0.85)
    insert_metric(conn, "m", drift_score=0.3)
    assert only_event(conn, "m")["reasons"] == ["drift_and_accuracy"]


def test_drift_threshold_comes_from_the_models_policy(conn):
    set_policy(conn, "m", drift_threshold=0.5, min_accuracy=0.5)
    insert_metric(conn, "m", accuracy=0.75, drift_score=0.4)  # drift below 0.5
    insert_metric(conn, "n", accuracy=0.85, drift_score=0.4)          # default policy
    assert [(e["model_name"], e["reasons"]) for e in events(conn)] == [
        ("n", ["drift_and_accuracy"])
    ]


# ---------------------------------------------------------------------------
# Several reasons at once; retrain rows
# ---------------------------------------------------------------------------


def test_several_reasons_at_once_reason_is_first_in_spec_order(conn):
    insert_metric(conn, "m", accuracy=0.9)
    metric_id = insert_metric(conn, "m", accuracy=0.5, drift_score=0.3)
    event = only_event(conn, "m")
    assert event["reason"] == "performance"
    assert event["reasons"] == ["performance", "accuracy_drop", "drift_and_accuracy"]
    assert set(event["details"]) == {"performance", "accuracy_drop", "drift_and_accuracy"}
    for reason in event["reasons"]:
        assert event["details"][reason]["count"] == 1
        assert event["details"][reason]["first"]["metric_id"] == metric_id


def test_performance_and_drift_at_once(conn):
    set_policy(conn, "m", drift_alone=True, min_accuracy=0.95)
    insert_metric(conn, "m", accuracy=0.92, drift_score=0.3)
    event = only_event(conn, "m")
    assert event["reason"] == "performance"
    assert event["reasons"] == ["performance", "drift"]


def test_accuracy_drop_and_drift_and_accuracy_at_once(conn):
    finish_retrain(conn, "m", promoted=True, accuracy=0.95)
    insert_metric(conn, "m", accuracy=0.85, drift_score=0.3)
    event = events(conn, "m", status="pending")
    assert len(event) == 1
    assert event[0]["reason"] == "accuracy_drop"
    assert event[0]["reasons"] == ["accuracy_drop", "drift_and_accuracy"]


def test_retrain_rows_never_fire(conn):
    set_policy(conn, "m", drift_alone=True)
    finish_retrain(conn, "m", promoted=True, accuracy=0.99)
    insert_metric(conn, "m", accuracy=0.99, source="retrain")
    metric_id = insert_metric(conn, "m", accuracy=0.1, drift_score=5.0, source="retrain")
    conn.execute(
        "INSERT INTO model_metrics (model_name, accuracy, drift_score, source) "
        "VALUES ('m', 0.2, 3.0, 'retrain'), ('m', 0.0, 9.0, 'retrain')"
    )
    _update_metric(conn, metric_id, accuracy=0.05, drift_score=7.0)
    assert events(conn, "m", status="pending") == []


def test_disabled_policy_records_no_metrics_event(conn):
    set_policy(conn, "m", enabled=False, drift_alone=True)
    insert_metric(conn, "m", accuracy=0.9)
    metric_id = insert_metric(conn, "m", accuracy=0.1, drift_score=3.0)
    _update_metric(conn, metric_id, accuracy=0.05)
    assert events(conn) == []
