"""SPEC section 2, reason `error_rate`: the value a training_data row reports,
and the rolling error rate of the model's newest scored rows."""

import math
import random
import threading
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import (
    cancel_pending,
    copy_rows,
    events,
    finish_retrain,
    insert_row,
    insert_scored,
    insert_scored_batch,
    listener,
    only_event,
    pending_event,
    received,
    set_policy,
    wait_until_blocked,
)


# ---------------------------------------------------------------------------
# The error_rate an inserted row reports
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_rate", "fires"),
    [(0.15, True), (0.05, False), (0.1, False), (0.1000001, True), (1.0, True), (None, False)],
)
def test_inserted_row_error_rate_against_threshold(conn, error_rate, fires):
    row_id = insert_row(conn, "m", error_rate=error_rate)
    rows = events(conn, "m")
    if not fires:
        assert rows == []
        return
    assert len(rows) == 1
    event = rows[0]
    assert event["reason"] == "error_rate"
    assert event["reasons"] == ["error_rate"]
    assert event["status"] == "pending"
    detail = event["details"]["error_rate"]
    assert detail["count"] == 1
    assert detail["first"] == detail["latest"]
    assert detail["first"]["error_rate"] == error_rate
    assert detail["first"]["threshold"] == 0.1
    assert detail["first"]["row_id"] == row_id


def test_threshold_comes_from_the_models_policy(conn):
    set_policy(conn, "strict", error_rate_threshold=0.02)
    insert_row(conn, "strict", error_rate=0.03)
    insert_row(conn, "loose", error_rate=0.03)
    assert [e["model_name"] for e in events(conn)] == ["strict"]
    assert events(conn, "strict")[0]["details"]["error_rate"]["first"]["threshold"] == 0.02


# ---------------------------------------------------------------------------
# UPDATE
# ---------------------------------------------------------------------------


def test_update_raising_error_rate_above_threshold_fires(conn):
    row_id = insert_row(conn, "m", error_rate=0.05)
    assert events(conn) == []
    conn.execute("UPDATE training_data SET error_rate = 0.15 WHERE id = %s", (row_id,))
    event = only_event(conn, "m")
    assert event["reason"] == "error_rate"
    assert event["details"]["error_rate"]["first"]["error_rate"] == 0.15
    assert event["details"]["error_rate"]["first"]["row_id"] == row_id


def test_update_lowering_error_rate_below_threshold_does_not_fire(conn):
    row_id = insert_row(conn, "m", error_rate=0.5)
    cancel_pending(conn)
    conn.execute("UPDATE training_data SET error_rate = 0.05 WHERE id = %s", (row_id,))
    assert pending_event(conn, "m") is None


@pytest.mark.parametrize(
    "assignment",
    ["label = 'cat'", "prediction = 'dog'", "error_rate = 0.4"],
)
def test_update_changing_label_prediction_or_error_rate_fires(conn, assignment):
    row_id = insert_row(conn, "m", error_rate=0.5)
    cancel_pending(conn)
    conn.execute("UPDATE training_data SET " + assignment + " WHERE id = %s", (row_id,))
    event = pending_event(conn, "m")
    assert event is not None
    assert event["reason"] == "error_rate"
    assert event["details"]["error_rate"]["first"]["row_id"] == row_id


@pytest.mark.parametrize(
    "assignment",
    [
        "features = '{\"x\": 2}'",
        "created_at = now() - interval '1 day'",
        "label = label, prediction = prediction, error_rate = error_rate",
    ],
)
def test_update_not_changing_label_prediction_or_error_rate_does_not_fire(conn, assignment):
    row_id = insert_row(conn, "m", error_rate=0.5)
    cancel_pending(conn)
    conn.execute("UPDATE training_data SET " + assignment + " WHERE id = %s", (row_id,))
    assert pending_event(conn, "m") is None
    assert len(events(conn, "m")) == 1  # only the cancelled one from the INSERT


def test_multi_row_update_fires_once_with_count_of_rows_over_threshold(conn):
    ids = [insert_row(conn, "m", error_rate=r) for r in (0.2, 0.3, 0.05, 0.6)]
    cancel_pending(conn)
    # The 0.6 row is over the threshold but its label does not change.
    conn.execute(
        "UPDATE training_data SET label = 'y' WHERE id = ANY(%s)", (ids[:3],)
    )
    event = pending_event(conn, "m")
    assert event is not None
    detail = event["details"]["error_rate"]
    assert detail["count"] == 2
    assert detail["first"]["error_rate"] == 0.3
    assert detail["first"]["row_id"] == ids[1]


# ---------------------------------------------------------------------------
# Multi-row INSERT and COPY: one firing per statement
# ---------------------------------------------------------------------------


def test_multi_row_insert_fires_once_with_count_of_rows_over_threshold(conn, db_url):
    listen = listener(db_url)
    try:
        rates = [0.05, 0.2, None, 0.5, 0.1, 0.3]
        ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO training_data (model_name, features, error_rate) "
                "SELECT 'm', jsonb_build_object('i', i), r "
                "FROM unnest(%s::float8[]) WITH ORDINALITY AS u(r, i) ORDER BY i RETURNING id",
                (rates,),
            ).fetchall()
        ]
        event = only_event(conn, "m")
        detail = event["details"]["error_rate"]
        assert detail["count"] == 3
        assert detail["first"]["error_rate"] == 0.5
        assert detail["first"]["threshold"] == 0.1
        assert detail["first"]["row_id"] == sorted(ids)[3]
        notes = received(listen, timeout=0.5)
        assert [n["id"] for n in notes] == [event["id"]]
    finally:
        listen.close()


def test_copy_fires_once_per_statement_and_model(conn, db_url):
    rows = []
    for i in range(100):
        rows.append(("m", {"i": i}, None, None, 0.5 if i % 5 == 0 else 0.01))  # 20 over
    for i in range(30):
        rows.append(("other", {"i": i}, None, None, 0.11 if i < 7 else None))  # 7 over
    rows.append(("calm", {"i": 0}, None, None, 0.1))
    listen = listener(db_url)
    try:
        copy_rows(conn, rows)
        m = only_event(conn, "m")
        other = only_event(conn, "other")
        assert events(conn, "calm") == []
        assert m["details"]["error_rate"]["count"] == 20
        assert m["details"]["error_rate"]["first"]["error_rate"] == 0.5
        assert other["details"]["error_rate"]["count"] == 7
        assert other["details"]["error_rate"]["first"]["error_rate"] == 0.11
        # The row with the highest error_rate (lowest id among ties) is named.
        first_other = conn.execute(
            "SELECT min(id) FROM training_data WHERE model_name = 'other'"
        ).fetchone()[0]
        assert other["details"]["error_rate"]["first"]["row_id"] == first_other
        notes = received(listen, timeout=0.5)
        assert sorted(n["model_name"] for n in notes) == ["m", "other"]
    finally:
        listen.close()

    # A second COPY extends the pending event: counts add up, first is kept.
    copy_rows(conn, [("m", {"i": i}, None, None, 0.9) for i in range(4)])
    m = only_event(conn, "m")
    assert m["details"]["error_rate"]["count"] == 24
    assert m["details"]["error_rate"]["first"]["error_rate"] == 0.5
    assert m["details"]["error_rate"]["latest"]["error_rate"] == 0.9


def test_copy_with_no_row_over_threshold_records_nothing(conn):
    copy_rows(conn, [("m", {"i": i}, None, None, 0.1) for i in range(50)])
    assert events(conn) == []


# ---------------------------------------------------------------------------
# The rolling error rate (error_window, min_error_rows)
# ---------------------------------------------------------------------------


@pytest.fixture
def small_window(conn):
    set_policy(conn, "m", error_window=10, min_error_rows=5)
    return "m"


def test_rolling_error_rate_waits_for_min_error_rows(conn, small_window):
    insert_scored(conn, "m", [True] * 4)  # 100% wrong, but only 4 scored rows
    assert events(conn) == []
    # Unscored rows do not count.
    insert_row(conn, "m", label="a")
    insert_row(conn, "m", prediction="b")
    assert events(conn) == []
    ids = insert_scored_batch(conn, "m", [False])  # 5th scored row: 4/5 wrong
    event = only_event(conn, "m")
    assert event["reason"] == "error_rate"
    detail = event["details"]["error_rate"]["first"]
    assert detail["rolling_error_rate"] == pytest.approx(0.8)
    assert detail["window_rows"] == 5
    assert detail["threshold"] == 0.1
    assert detail["newest_row_id"] == ids[-1]
    assert "error_rate" not in detail  # no row reported an error_rate itself


def test_rolling_error_rate_at_or_below_threshold_does_not_fire(conn, small_window):
    insert_scored(conn, "m", [False] * 9 + [True])  # 1/10 = 0.1, not above
    assert events(conn) == []
    insert_scored(conn, "m", [True])  # window: 8 right, 2 wrong = 0.2
    event = only_event(conn, "m")
    detail = event["details"]["error_rate"]["first"]
    assert detail["rolling_error_rate"] == pytest.approx(0.2)
    assert detail["window_rows"] == 10


def test_default_policy_window_needs_50_rows(conn):
    insert_scored_batch(conn, "m", [True] * 49)
    assert events(conn) == []
    insert_scored_batch(conn, "m", [False])
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 50
    assert detail["rolling_error_rate"] == pytest.approx(49 / 50)


def test_only_the_newest_error_window_rows_count(conn, small_window):
    insert_scored_batch(conn, "m", [True] * 10)
    assert pending_event(conn, "m") is not None
    cancel_pending(conn)
    # Ten good rows push every bad one out of the 10-row window.
    insert_scored_batch(conn, "m", [False] * 10)
    assert pending_event(conn, "m") is None
    insert_scored(conn, "m", [True])  # 1/10
    assert pending_event(conn, "m") is None
    insert_scored(conn, "m", [True])  # 2/10
    event = pending_event(conn, "m")
    assert event is not None
    assert event["details"]["error_rate"]["first"]["rolling_error_rate"] == pytest.approx(0.2)
    assert event["details"]["error_rate"]["first"]["window_rows"] == 10


def test_one_statement_larger_than_the_window_keeps_its_newest_rows(conn, small_window):
    # 15 rows: the 5 oldest wrong, the 10 newest right -> window is all right.
    insert_scored_batch(conn, "m", [True] * 5 + [False] * 10)
    assert events(conn) == []


def test_label_arriving_later_by_update_enters_the_window(conn, small_window):
    late = insert_row(conn, "m", prediction="b")  # scored only once labelled
    insert_scored(conn, "m", [True] * 4)
    assert events(conn) == []
    conn.execute("UPDATE training_data SET label = 'a' WHERE id = %s", (late,))
    event = only_event(conn, "m")
    detail = event["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 5
    assert detail["rolling_error_rate"] == pytest.approx(1.0)
    assert detail["newest_row_id"] == late


def test_correcting_a_label_in_the_window_is_counted(conn, small_window):
    ids = insert_scored_batch(conn, "m", [False] * 9 + [True])  # 0.1
    assert events(conn) == []
    conn.execute("UPDATE training_data SET label = 'z' WHERE id = %s", (ids[0],))  # now wrong
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 10
    assert detail["rolling_error_rate"] == pytest.approx(0.2)


def test_a_row_whose_label_is_removed_leaves_the_window(conn, small_window):
    ids = insert_scored_batch(conn, "m", [False] * 9 + [True])  # 1/10
    assert events(conn) == []
    conn.execute("UPDATE training_data SET label = NULL WHERE id = %s", (ids[0],))
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]  # 1/9
    assert detail["window_rows"] == 9
    assert detail["rolling_error_rate"] == pytest.approx(1 / 9)


def test_window_restarts_after_a_successful_retrain(conn, small_window):
    insert_scored_batch(conn, "m", [True] * 10)
    cancel_pending(conn)
    finish_retrain(conn, "m")
    insert_scored(conn, "m", [True] * 4)  # only 4 scored rows since the retrain
    assert pending_event(conn, "m") is None
    insert_scored(conn, "m", [True])
    event = pending_event(conn, "m")
    assert event is not None
    assert event["details"]["error_rate"]["first"]["window_rows"] == 5


def test_window_does_not_restart_after_a_failed_retrain(conn, small_window):
    insert_scored_batch(conn, "m", [True] * 10)
    cancel_pending(conn)
    finish_retrain(conn, "m", status="failed")
    # A correct prediction cannot raise the rate; the next wrong one finds
    # the old rows still in the window.
    insert_scored(conn, "m", [False])
    assert pending_event(conn, "m") is None
    insert_scored(conn, "m", [True])
    event = pending_event(conn, "m")
    assert event is not None
    assert event["details"]["error_rate"]["first"]["window_rows"] == 10
    assert event["details"]["error_rate"]["first"]["rolling_error_rate"] == pytest.approx(0.9)


def test_row_error_rate_and_rolling_rate_in_one_statement(conn, small_window):
    insert_scored(conn, "m", [True] * 4)
    row_id = conn.execute(
        "INSERT INTO training_data (model_name, features, label, prediction, error_rate) "
        "VALUES ('m', %s, 'a', 'b', 0.3) RETURNING id",
        (Jsonb({"x": 1}),),
    ).fetchone()[0]
    event = only_event(conn, "m")
    assert event["reasons"] == ["error_rate"]
    detail = event["details"]["error_rate"]
    assert detail["count"] == 1
    assert detail["first"]["error_rate"] == 0.3
    assert detail["first"]["row_id"] == row_id
    assert detail["first"]["rolling_error_rate"] == pytest.approx(1.0)
    assert detail["first"]["window_rows"] == 5


def test_disabled_policy_records_no_error_rate_event(conn):
    set_policy(conn, "m", enabled=False, error_window=10, min_error_rows=5)
    insert_row(conn, "m", error_rate=0.9)
    insert_scored_batch(conn, "m", [True] * 10)
    copy_rows(conn, [("m", {"i": 1}, "a", "b", 0.8)])
    assert events(conn) == []


def test_concurrent_scored_inserts_are_all_counted_in_the_window(conn, db_url, small_window):
    # The model is known (an unscored row), but has no error window yet, as
    # after a successful retrain.
    insert_row(conn, "m")
    errors = []
    with psycopg.connect(db_url, autocommit=True) as first:
        with first.transaction():
            insert_scored_batch(first, "m", [True] * 3)

            def second_writer():
                try:
                    with psycopg.connect(db_url, autocommit=True) as second:
                        insert_scored_batch(second, "m", [True] * 3)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)

            thread = threading.Thread(target=second_writer)
            thread.start()
            wait_until_blocked(conn)
        thread.join(30)
    assert not errors
    # Six wrong predictions out of six scored rows, with min_error_rows = 5.
    event = pending_event(conn, "m")
    assert event is not None
    assert event["details"]["error_rate"]["latest"]["window_rows"] == 6


def test_a_correct_row_reaching_min_error_rows_fires_on_the_single_row_path(conn, small_window):
    insert_scored(conn, "m", [True] * 4)  # one statement per row
    assert events(conn) == []
    row = insert_row(conn, "m", label="a", prediction="a")  # 5th scored row, correct
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 5
    assert detail["rolling_error_rate"] == pytest.approx(0.8)
    assert detail["newest_row_id"] == row


def test_only_wrong_predictions_extend_a_pending_window_event(conn, small_window):
    # A correct prediction cannot raise the rate: it does not read the window.
    insert_scored_batch(conn, "m", [True] * 10)
    assert pending_event(conn, "m")["details"]["error_rate"]["count"] == 1
    insert_scored(conn, "m", [False] * 3)
    assert pending_event(conn, "m")["details"]["error_rate"]["count"] == 1
    insert_scored(conn, "m", [True])
    event = pending_event(conn, "m")
    assert event["details"]["error_rate"]["count"] == 2
    assert event["details"]["error_rate"]["latest"]["rolling_error_rate"] == pytest.approx(0.7)


def test_a_policy_change_makes_the_next_scored_row_look_at_the_window(conn):
    set_policy(conn, "m", error_window=10, min_error_rows=5, error_rate_threshold=0.5)
    insert_scored(conn, "m", [False] * 7 + [True] * 3)  # 0.3: under 0.5
    assert events(conn) == []
    set_policy(conn, "m", error_rate_threshold=0.2)
    insert_scored(conn, "m", [False])  # correct, but 0.3 is over the new 0.2
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["rolling_error_rate"] == pytest.approx(0.3)
    assert detail["threshold"] == 0.2


def test_cancelling_a_pending_event_does_not_wait_for_a_writer_of_the_model(conn, db_url,
                                                                            small_window):
    conn.execute("SELECT request_retrain('m')")
    with psycopg.connect(db_url) as etl:
        # The writer holds the model lock and has armed its window check.
        insert_scored(etl, "m", [True] * 2)
        with psycopg.connect(db_url, autocommit=True) as operator:
            operator.execute("SET lock_timeout = '5s'")
            operator.execute("UPDATE retrain_events SET status = 'cancelled' "
                             "WHERE status = 'pending'")
        insert_scored(etl, "m", [True] * 3)  # now it fires
        etl.commit()
    assert pending_event(conn, "m")["reasons"] == ["error_rate"]


def test_rows_added_before_a_successful_retrain_stay_out_of_the_window(conn, small_window):
    early = insert_row(conn, "m", prediction="b")  # not scored yet
    finish_retrain(conn, "m")
    insert_scored(conn, "m", [True] * 4)
    conn.execute("UPDATE training_data SET label = 'a' WHERE id = %s", (early,))  # wrong
    assert pending_event(conn, "m") is None  # 4 rows since the retrain, not 5
    insert_scored(conn, "m", [True])
    assert pending_event(conn, "m")["details"]["error_rate"]["first"]["window_rows"] == 5


def test_a_metric_of_a_model_does_not_wait_for_a_writer_that_armed_its_window(conn, db_url,
                                                                             small_window):
    insert_row(conn, "m")  # a known model
    with psycopg.connect(db_url) as etl:
        insert_scored(etl, "m", [True] * 2)  # updates the model's retrain_models row
        with psycopg.connect(db_url, autocommit=True) as evaluation:
            evaluation.execute("SET lock_timeout = '5s'")
            evaluation.execute(
                "INSERT INTO model_metrics (model_name, accuracy) VALUES ('m', 0.99)")
        etl.commit()
    assert events(conn) == []


def _copied_threshold(conn, model):
    return conn.execute(
        "SELECT error_rate_threshold FROM retrain_models WHERE model_name = %s", (model,)
    ).fetchone()[0]


def test_single_row_inserts_follow_policy_changes(conn):
    insert_row(conn, "m")  # a known model, on the default policy
    conn.execute("UPDATE retrain_policies SET error_rate_threshold = 0.2 WHERE model_name = 'default'")
    insert_row(conn, "m", error_rate=0.15)
    assert events(conn) == []
    set_policy(conn, "m", error_rate_threshold=0.1)  # a policy of its own
    insert_row(conn, "m", error_rate=0.15)
    assert only_event(conn, "m")["details"]["error_rate"]["first"]["threshold"] == 0.1
    cancel_pending(conn)
    conn.execute("DELETE FROM retrain_policies WHERE model_name = 'm'")  # back to default
    insert_row(conn, "m", error_rate=0.15)
    assert pending_event(conn, "m") is None
    conn.execute("UPDATE retrain_policies SET enabled = false WHERE model_name = 'default'")
    insert_row(conn, "m", error_rate=0.9)
    assert pending_event(conn, "m") is None


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
def test_copies_read_before_a_policy_change_are_not_used(conn, db_url, isolation):
    # The ETL registers a model with the policy its snapshot sees while an
    # administrator changes that policy: the copies carry an old version.
    with psycopg.connect(db_url) as etl:
        etl.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        etl.execute("SELECT 1")  # the snapshot, for REPEATABLE READ and SERIALIZABLE
        conn.execute("UPDATE retrain_policies SET error_rate_threshold = 0.6 "
                     "WHERE model_name = 'default'")
        insert_row(etl, "new")  # registers "new"
        etl.commit()
    insert_row(conn, "new", error_rate=0.3)  # under 0.6: nothing
    assert events(conn) == []
    assert _copied_threshold(conn, "new") == 0.6
    insert_row(conn, "new", error_rate=0.7)  # the single-row path, renewed copies
    assert only_event(conn, "new")["details"]["error_rate"]["first"]["threshold"] == 0.6


def test_a_policy_changed_in_repeatable_read_applies_to_a_model_registered_meanwhile(conn,
                                                                                     db_url):
    with psycopg.connect(db_url) as admin:
        admin.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        admin.execute("SELECT 1")
        copy_rows(conn, [("n1", {"i": 1}, None, None, None), ("n1", {"i": 2}, None, None, None)])
        admin.execute("UPDATE retrain_policies SET error_rate_threshold = 0.5 "
                      "WHERE model_name = 'default'")
        admin.commit()
    insert_row(conn, "n1", error_rate=0.3)
    assert events(conn) == []
    insert_row(conn, "n1", error_rate=0.55)
    assert only_event(conn, "n1")["details"]["error_rate"]["first"]["threshold"] == 0.5


def test_after_a_policy_change_writers_of_a_model_do_not_wait_for_each_other(conn, db_url):
    insert_row(conn, "m")
    conn.execute("UPDATE retrain_policies SET error_window = 100 WHERE model_name = 'default'")
    with psycopg.connect(db_url) as first:
        insert_row(first, "m")  # renews the model's copies, under its lock
        with psycopg.connect(db_url, autocommit=True) as second:
            second.execute("SET lock_timeout = '5s'")
            insert_row(second, "m")  # copies still old to it: decides from the policy
        first.commit()
    assert conn.execute("SELECT error_window FROM retrain_models "
                        "WHERE model_name = 'm'").fetchone()[0] == 100


def test_the_window_of_a_small_model_is_read_on_its_own_index(conn):
    # One model in a thousand rows: reading the primary key backwards would
    # filter through every other model's rows.
    conn.execute("ALTER TABLE training_data DISABLE TRIGGER USER")
    conn.execute(
        "INSERT INTO training_data (model_name, features, label, prediction) "
        "SELECT CASE WHEN i % 1000 = 0 THEN 'small' ELSE 'big' END, '{}', 'a', 'a' "
        "FROM generate_series(1, 50000) AS i")
    conn.execute("ALTER TABLE training_data ENABLE TRIGGER USER")
    conn.execute("ANALYZE training_data")
    insert_row(conn, "small")  # a known model

    def scans():
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return {name: (scans, read) for name, scans, read in conn.execute(
            "SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes "
            "WHERE relname = 'training_data'").fetchall()}

    # Wrong predictions read the window; after five reads in a session
    # PostgreSQL may switch a statement to its generic plan.
    for _ in range(8):
        insert_row(conn, "small", label="a", prediction="b")
    before = scans()
    insert_row(conn, "small", label="a", prediction="b")
    after = scans()
    assert after["training_data_labelled_idx"][0] > before["training_data_labelled_idx"][0]
    # The planner may peek at the primary key's newest id; it does not walk it.
    assert after["training_data_pkey"][1] - before["training_data_pkey"][1] < 100


_READ_COUNTERS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch")


def _retrain_models_reads_during(conn, action) -> dict[str, int]:
    """How much ``action()`` read retrain_models: the backend's counters,
    before and after, in one transaction (the counters of earlier
    transactions not yet flushed are in both)."""
    query = ("SELECT " + ", ".join(f"coalesce({c}, 0)" for c in _READ_COUNTERS)
             + " FROM pg_stat_xact_user_tables WHERE relname = 'retrain_models'")
    with conn.transaction():
        before = conn.execute(query).fetchone()
        action()
        after = conn.execute(query).fetchone()
    return {c: a - b for c, a, b in zip(_READ_COUNTERS, after, before)}


def test_a_copys_reads_of_retrain_models_do_not_grow_with_its_rows(conn):
    # Single-row statements first: the session keeps the plans they made, as
    # a serving path's INSERTs would leave them before an ETL job's COPY.
    for _ in range(3):
        insert_row(conn, "m", label="a", prediction="a")

    def copy_and_count(rows: int) -> tuple[int, int]:
        reads = _retrain_models_reads_during(conn, lambda: copy_rows(
            conn, [("m", {"x": i}, "a", "a" if i % 20 else "b", None) for i in range(rows)]))
        return (reads["seq_scan"] + reads["idx_scan"],
                reads["seq_tup_read"] + reads["idx_tup_fetch"])

    small, large = copy_and_count(200), copy_and_count(2000)
    # (scans, rows read): a handful each, and 1800 more rows add none.
    assert small == large and large[0] < 10, (small, large)


def test_after_a_copy_single_row_inserts_look_their_model_up_by_key(conn):
    # PostgreSQL plans the trigger's statements once per session, for the
    # first statement's size. A session that begins with a COPY must not be
    # left with a plan that scans every model on each later single-row INSERT.
    conn.execute("INSERT INTO retrain_models (model_name) "
                 "SELECT 'other-' || i FROM generate_series(1, 3000) AS i")
    conn.execute("ANALYZE retrain_models")
    copy_rows(conn, [("m", {"x": i}, "a", "a", None) for i in range(5000)])

    def inserts():
        for _ in range(20):
            insert_row(conn, "m", label="a", prediction="a")

    reads = _retrain_models_reads_during(conn, inserts)
    rows_scanned, lookups = reads["seq_tup_read"], reads["idx_scan"]
    assert rows_scanned == 0 and lookups == 20, (rows_scanned, lookups)


# ---------------------------------------------------------------------------
# The bound on a window's errors: most wrong predictions do not read the
# window, yet every decision is the one a full read would make
# ---------------------------------------------------------------------------


@pytest.fixture
def wide_window(conn):
    set_policy(conn, "m", error_window=100, min_error_rows=5)
    return "m"


def _a_quiet_window_of(conn, rows: int) -> list[int]:
    """rows scored rows, one wrong (the last): 1/rows, under 0.1; the wrong
    one makes the model read its window, which leaves a bound behind."""
    ids = insert_scored_batch(conn, "m", [False] * (rows - 1) + [True])
    assert events(conn) == []
    return ids


def test_deleting_rows_from_the_window_is_seen_by_the_next_wrong_prediction(conn, wide_window):
    ids = _a_quiet_window_of(conn, 91)
    conn.execute("DELETE FROM training_data WHERE id = ANY (%s)", (ids[:85],))
    # Left: 6 scored rows, 1 wrong; one more wrong: 2/7, over 0.1. By the
    # bound kept before the delete (1 error in 91 rows) it could not be.
    insert_scored(conn, "m", [True])
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 7
    assert detail["rolling_error_rate"] == pytest.approx(2 / 7)


def test_truncating_training_data_is_seen_by_the_next_wrong_prediction(conn, wide_window):
    _a_quiet_window_of(conn, 91)
    conn.execute("TRUNCATE training_data")
    insert_scored(conn, "m", [False] * 4)
    insert_scored(conn, "m", [True])  # 1/5
    assert only_event(conn, "m")["details"]["error_rate"]["first"]["window_rows"] == 5


def test_rows_moved_to_another_model_leave_the_old_models_window(conn, wide_window):
    ids = _a_quiet_window_of(conn, 91)
    conn.execute("UPDATE training_data SET model_name = 'other' WHERE id = ANY (%s)", (ids[:85],))
    insert_scored(conn, "m", [True])
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 7
    assert detail["rolling_error_rate"] == pytest.approx(2 / 7)


def test_a_smaller_window_is_read_again(conn, wide_window):
    _a_quiet_window_of(conn, 91)  # the wrong row is the newest
    set_policy(conn, "m", error_window=5)
    # The window: the newest 5 rows, 1 wrong; one more wrong: 2/5.
    insert_scored(conn, "m", [True])
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 5
    assert detail["rolling_error_rate"] == pytest.approx(2 / 5)


def test_a_repeatable_read_writer_does_not_fail_on_a_bound_written_meanwhile(conn, db_url,
                                                                           wide_window):
    _a_quiet_window_of(conn, 91)
    with psycopg.connect(db_url) as rr:
        rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rr.execute("SELECT count(*) FROM training_data").fetchone()  # takes the snapshot
        insert_scored(conn, "m", [True])  # another writer moves the bound on, and commits
        insert_scored(rr, "m", [True])  # reads the window as of its snapshot
        rr.commit()
    assert events(conn) == []


def test_window_decisions_match_a_recount_after_every_statement(conn):
    """A long random run of single-row and multi-row inserts, label updates,
    deletes, moves to another model and successful retrains, with the error
    rate moving across the threshold and back: after every statement the
    model's error_rate firings are what a recount of its window from the
    table gives."""
    window, min_rows, threshold = 40, 10, 0.1
    set_policy(conn, "m", error_window=window, min_error_rows=min_rows,
               error_rate_threshold=threshold, cooldown="0", schedule_interval=None)
    rnd = random.Random(20261201)
    due = False

    def window_now():
        after = conn.execute(
            "SELECT coalesce((SELECT error_window_after FROM retrain_events "
            "WHERE model_name = 'm' AND status = 'succeeded' ORDER BY id DESC LIMIT 1), 0)"
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT label <> prediction FROM training_data WHERE model_name = 'm' "
            "AND label IS NOT NULL AND prediction IS NOT NULL AND id > %s "
            "ORDER BY id DESC LIMIT %s", (after, window)).fetchall()
        return len(rows), sum(1 for (wrong,) in rows if wrong)

    def firings():
        return conn.execute(
            "SELECT coalesce(sum((details -> 'error_rate' ->> 'count')::bigint), 0) "
            "FROM retrain_events WHERE model_name = 'm'").fetchone()[0]

    def scored_rows(count, wrong_share):
        return [rnd.random() < wrong_share for _ in range(count)]

    def recent_ids(scored_correct_only=False):
        cond = "AND label = prediction" if scored_correct_only else ""
        return [r[0] for r in conn.execute(
            f"SELECT id FROM training_data WHERE model_name = 'm' {cond} "
            "ORDER BY id DESC LIMIT 60").fetchall()]

    seen = firings()
    for step in range(500):
        # The share of wrong predictions drifts across the threshold and back.
        wrong_share = 0.02 + 0.2 * (1 + math.sin(step / 25)) / 2
        action = rnd.random()
        checks = False
        if action < 0.70:
            wrong = rnd.random() < wrong_share
            insert_scored(conn, "m", [wrong])
            checks = wrong or due
        elif action < 0.80:
            outcomes = scored_rows(rnd.randint(2, 6), wrong_share)
            insert_scored_batch(conn, "m", outcomes)
            checks = any(outcomes) or due
        elif action < 0.85:
            insert_row(conn, "m")  # unscored: nothing to look at
        elif action < 0.91:
            ids = recent_ids()
            if ids:
                row = rnd.choice(ids)
                before = conn.execute("SELECT label IS NOT NULL AND prediction IS NOT NULL, "
                                      "label <> prediction FROM training_data WHERE id = %s",
                                      (row,)).fetchone()
                prediction = rnd.choice(["a", "b"])
                conn.execute("UPDATE training_data SET label = 'a', prediction = %s "
                             "WHERE id = %s", (prediction, row))
                checks = before != (True, prediction != "a")
        elif action < 0.95:
            ids = recent_ids(scored_correct_only=True)
            if ids:
                conn.execute("DELETE FROM training_data WHERE id = ANY (%s)",
                             (rnd.sample(ids, min(len(ids), rnd.randint(1, 20))),))
        elif action < 0.98:
            ids = recent_ids(scored_correct_only=True)
            if ids:
                conn.execute("UPDATE training_data SET model_name = 'other' WHERE id = %s",
                             (rnd.choice(ids),))
        else:
            cancel_pending(conn, "m")
            finish_retrain(conn, "m")  # the window starts again; a due look stays due
        expected = 0
        if checks:
            rows, errors = window_now()
            rate = errors / rows if rows else None
            if rows >= min_rows and rate > threshold:
                expected = 1
            due = rows < min_rows and rate is not None and rate > threshold
        now = firings()
        assert now - seen == expected, f"step {step}: {now - seen} firings, expected {expected}"
        seen = now
    # The run crossed the threshold both ways, and fired.
    assert seen > 0


def test_wrong_predictions_of_repeatable_read_writers_are_not_lost_to_the_bound(conn, db_url):
    # The bound of a READ COMMITTED read; then wrong predictions by REPEATABLE
    # READ writers, which cannot add to a bound they may not see.
    set_policy(conn, "m", error_window=200, min_error_rows=50, cooldown="0")
    insert_scored(conn, "m", [False] * 100)
    insert_scored(conn, "m", [True])  # 1/101: a full read, a bound
    with psycopg.connect(db_url) as rr:
        rr.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        for _ in range(10):
            insert_scored(rr, "m", [True])  # each at most 11/111: nothing fires
            rr.commit()
    assert events(conn) == []
    insert_scored(conn, "m", [True])  # 12/112, over 0.1
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 112
    assert detail["rolling_error_rate"] == pytest.approx(12 / 112)


def test_deleting_statements_do_not_wait_for_each_other(conn, db_url, wide_window):
    _a_quiet_window_of(conn, 50)
    first = insert_row(conn, "m", label="a", prediction="a")
    second = insert_row(conn, "m", label="a", prediction="a")
    with psycopg.connect(db_url) as one, psycopg.connect(db_url) as two:
        one.execute("DELETE FROM training_data WHERE id = %s", (first,))
        two.execute("SET lock_timeout = '5s'")
        two.execute("DELETE FROM training_data WHERE id = %s", (second,))
        two.execute("DELETE FROM training_data WHERE false")
        one.commit()
        two.commit()


def test_after_truncate_restart_identity_the_window_starts_at_the_first_row(conn, wide_window):
    insert_scored(conn, "m", [False] * 20)
    finish_retrain(conn, "m")  # the window starts after id 20
    conn.execute("TRUNCATE training_data RESTART IDENTITY")
    insert_scored(conn, "m", [False] * 4)  # ids 1-4 again
    insert_scored(conn, "m", [True])  # 1/5, over 0.1
    detail = pending_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 5
    assert detail["rolling_error_rate"] == pytest.approx(1 / 5)


def test_a_repeatable_read_writer_voids_the_bound_even_when_it_sees_a_void(conn, db_url):
    # The void this writer sees in its snapshot has been taken away by a
    # READ COMMITTED read it cannot see; its wrong predictions must still
    # keep later writers from trusting that read's bound.
    set_policy(conn, "m", error_window=200, min_error_rows=50, cooldown="0")
    ids = insert_scored_batch(conn, "m", [False] * 201)
    insert_scored(conn, "m", [True])  # a full read: 1/200, a bound
    conn.execute("DELETE FROM training_data WHERE id = %s", (ids[1],))  # voids it
    with psycopg.connect(db_url) as rr:
        rr.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        rr.execute("SELECT count(*) FROM training_data").fetchone()  # the snapshot, void in it
        insert_scored(conn, "m", [True])  # a full read takes the void away: 2/200
        insert_scored_batch(rr, "m", [True] * 15)  # 16/200 as it sees the window
        rr.commit()
    assert events(conn) == []  # 17/200
    for _ in range(4):
        insert_scored(conn, "m", [True])  # 18/200 ... 21/200: over 0.1 at the last
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 200
    assert detail["rolling_error_rate"] == pytest.approx(21 / 200)


def test_rows_moved_into_a_model_enter_its_window(conn, wide_window):
    _a_quiet_window_of(conn, 91)  # m: 1 wrong in 91, and a bound
    moved = insert_scored_batch(conn, "other", [True] * 8)
    conn.execute("UPDATE training_data SET model_name = 'm' WHERE id = ANY (%s)", (moved,))
    # m's window: 99 rows, 9 wrong; one more wrong: 10/100, not over; another: 11/100.
    insert_scored(conn, "m", [True])
    assert events(conn, "m") == []
    insert_scored(conn, "m", [True])
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 100
    assert detail["rolling_error_rate"] == pytest.approx(11 / 100)


def test_moving_wrong_rows_into_a_model_can_fire_it(conn, wide_window):
    _a_quiet_window_of(conn, 91)
    moved = insert_scored_batch(conn, "other", [True] * 20)
    conn.execute("UPDATE training_data SET model_name = 'm' WHERE id = ANY (%s)", (moved,))
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 100
    assert detail["rolling_error_rate"] == pytest.approx(21 / 100)


@pytest.mark.parametrize("statement", ["single", "multi"])
def test_wrong_predictions_of_a_disabled_policy_count_once_it_is_enabled(conn, db_url,
                                                                          statement):
    # A writer from the disabled days commits after the policy is enabled
    # again and after the model's first look at its window (which could not
    # see its rows): they still count.
    set_policy(conn, "m", error_window=200, min_error_rows=50, cooldown="0")
    insert_scored_batch(conn, "m", [False] * 200)
    insert_scored(conn, "m", [True])  # a bound: 1/200
    set_policy(conn, "m", enabled=False)
    insert_scored(conn, "m", [False])  # the copies say disabled now
    with psycopg.connect(db_url) as late:
        if statement == "single":
            for _ in range(30):
                insert_scored(late, "m", [True])
        else:
            insert_scored_batch(late, "m", [True] * 30)
        set_policy(conn, "m", enabled=True)
        insert_scored(conn, "m", [False])  # the look after the policy change: 1/200
        late.commit()
    assert events(conn) == []
    insert_scored(conn, "m", [True])  # 32/200
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["rolling_error_rate"] == pytest.approx(32 / 200)


def test_a_disabled_models_wrong_predictions_keep_one_void(conn):
    set_policy(conn, "m", enabled=False)
    for _ in range(5):
        insert_scored(conn, "m", [True])
    insert_scored_batch(conn, "m", [True] * 3)
    assert conn.execute("SELECT count(*) FROM retrain_window_voids "
                        "WHERE model_name = 'm'").fetchone()[0] == 1
    assert events(conn) == []


def test_writers_of_a_disabled_model_labelling_the_same_rows_do_not_deadlock(conn, db_url):
    set_policy(conn, "d", enabled=False)
    conn.execute("INSERT INTO training_data (model_name, features, prediction) "
                 "SELECT 'd', '{}', 'a' FROM generate_series(1, 10)")
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM training_data WHERE model_name = 'd' ORDER BY id").fetchall()]
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        insert_scored(second, "d", [True])  # a wrong prediction, its transaction open
        failures = []

        def label_five():
            try:
                first.execute("UPDATE training_data SET label = 'b' WHERE id = ANY (%s)",
                              (ids[:5],))
                first.commit()
            except psycopg.Error as exc:
                failures.append(exc)
                first.rollback()

        labelling = threading.Thread(target=label_five)
        labelling.start()
        try:
            # The first labels rows 1-5 (had it to wait for the model's lock,
            # it would wait here, holding them); the second then labels row 3.
            time.sleep(0.3)
            second.execute("UPDATE training_data SET label = 'a' WHERE id = %s", (ids[2],))
            second.commit()
        finally:
            labelling.join(timeout=30)
        assert not labelling.is_alive()
        assert failures == []
