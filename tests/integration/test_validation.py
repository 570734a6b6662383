"""Bad input is rejected by the database, with an error that names the column."""


import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import copy_rows, set_policy


def _insert_training(conn, features, error_rate=None):
    conn.execute(
        "INSERT INTO training_data (features, error_rate) VALUES (%s, %s)",
        (Jsonb(features), error_rate),
    )


@pytest.mark.parametrize(
    "features",
    [{"nested": {"a": 1}}, {"list": [1, 2]}, [1, 2], "just a string", 3],
)
def test_features_must_be_a_flat_object_of_scalars(conn, features):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        _insert_training(conn, features)
    assert "features_must_be_flat_json_object" in str(err.value)


def test_features_of_every_scalar_type_and_empty_object_are_accepted(conn):
    _insert_training(conn, {"n": 1.5, "s": "red", "b": True, "z": None})
    _insert_training(conn, {})
    assert conn.execute("SELECT count(*) FROM training_data").fetchone()[0] == 2


@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan"), float("inf")])
def test_error_rate_outside_0_1_or_nan_is_rejected(conn, value):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        _insert_training(conn, {"a": 1}, error_rate=value)
    assert "error_rate_between_0_and_1" in str(err.value)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_accuracy_outside_0_1_or_nan_is_rejected(conn, value):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute("INSERT INTO model_metrics (model_name, accuracy) VALUES ('m', %s)", (value,))
    assert "accuracy_between_0_and_1" in str(err.value)


@pytest.mark.parametrize("value", [-0.001, float("nan"), float("inf")])
def test_negative_nan_or_infinite_drift_is_rejected(conn, value):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute(
            "INSERT INTO model_metrics (model_name, drift_score) VALUES ('m', %s)", (value,)
        )
    assert "drift_score_at_least_0_and_finite" in str(err.value)


def test_unknown_source_is_rejected(conn):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute("INSERT INTO model_metrics (model_name, source) VALUES ('m', 'cron')")
    assert "source_is_external_monitor_or_retrain" in str(err.value)


def test_bounds_themselves_are_accepted(conn):
    conn.execute(
        "INSERT INTO model_metrics (model_name, accuracy, drift_score) "
        "VALUES ('m', 0, 0), ('m', 1, 12.5)"
    )
    _insert_training(conn, {"a": 1}, error_rate=0)
    _insert_training(conn, {"a": 1}, error_rate=1)


def test_a_bad_row_rejects_the_whole_multi_row_insert(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO training_data (model_name, features, error_rate) VALUES "
            "('m', '{\"a\": 1}', 0.5), ('m', '{\"a\": [1]}', 0.5), ('m', '{}', 0.5)"
        )
    assert conn.execute("SELECT count(*) FROM training_data").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM retrain_events").fetchone()[0] == 0


def test_a_bad_row_rejects_the_whole_copy(conn):
    rows = [("m", {"a": i}, "x", "y", 0.5) for i in range(100)]
    rows.insert(50, ("m", {"a": {"deep": 1}}, "x", "y", 0.5))
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        copy_rows(conn, rows)
    assert "features_must_be_flat_json_object" in str(err.value)
    assert conn.execute("SELECT count(*) FROM training_data").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM retrain_events").fetchone()[0] == 0


def test_bad_policy_values_name_the_column(conn):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute("UPDATE retrain_policies SET min_accuracy = 1.2 WHERE model_name = 'default'")
    assert "min_accuracy_between_0_and_1" in str(err.value)


@pytest.mark.parametrize(
    ("assignment", "rule"),
    [("status = 'done'", "status_is_known"), ("reason = 'hunch'", "reason_is_known")],
)
def test_unknown_event_status_or_reason_is_rejected_naming_the_rule(conn, assignment, rule):
    conn.execute("INSERT INTO retrain_events (model_name, reason, reasons) "
                 "VALUES ('m', 'manual', '{manual}')")
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute(f"UPDATE retrain_events SET {assignment}")
    assert rule in str(err.value)
    assert conn.execute("SELECT status, reason FROM retrain_events").fetchone() == (
        "pending", "manual")


def test_default_policy_exists_with_spec_defaults_and_cannot_be_deleted(conn):
    row = conn.execute(
        "SELECT enabled, error_rate_threshold, min_accuracy, accuracy_drop_tolerance, "
        "drift_threshold, combined_max_accuracy, drift_alone, schedule_interval::text, "
        "cooldown::text, min_training_rows, max_attempts, error_window, min_error_rows, "
        "drift_min_rows FROM retrain_policies WHERE model_name = 'default'"
    ).fetchone()
    assert row == (True, 0.1, 0.8, 0.05, 0.25, 0.9, False, "7 days", "01:00:00",
                   50, 3, 200, 50, 200)
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("DELETE FROM retrain_policies WHERE model_name = 'default'")


def test_truncating_the_policies_is_refused_as_it_would_delete_the_default_row(conn):
    set_policy(conn, "m", error_rate_threshold=0.2)
    with pytest.raises(psycopg.errors.RestrictViolation) as err:
        conn.execute("TRUNCATE retrain_policies")
    assert "default retrain policy cannot be deleted" in str(err.value)
    assert "DELETE FROM retrain_policies WHERE model_name <> 'default'" in err.value.diag.message_hint
    assert conn.execute("SELECT model_name FROM retrain_policies ORDER BY 1").fetchall() == [
        ("default",), ("m",)]
    # What the hint says works.
    conn.execute("DELETE FROM retrain_policies WHERE model_name <> 'default'")
    assert conn.execute("SELECT model_name FROM retrain_policies").fetchall() == [("default",)]
