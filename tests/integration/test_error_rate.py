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


def test_multi_row_update_fires_once_naming_the_highest_changed_row(conn):
    ids = [insert_row(conn, "m", error_rate=r) for r in (0.2, 0.3, 0.05, 0.6)]
    cancel_pending(conn)
    # The 0.6 row is over the threshold but its label does not change.
    conn.execute(
        "UPDATE training_data SET label = 'y' WHERE id = ANY(%s)", (ids[:3],)
    )
    event = pending_event(conn, "m")
    assert event is not None
    detail = event["details"]["error_rate"]
    assert detail["count"] == 1
    assert detail["first"]["error_rate"] == 0.3
    assert detail["first"]["row_id"] == ids[1]


# ---------------------------------------------------------------------------
# Multi-row INSERT and COPY: one firing per statement
# ---------------------------------------------------------------------------


def test_multi_row_insert_fires_once_naming_the_highest_row(conn, db_url):
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
        assert detail["count"] == 1
        assert detail["first"]["error_rate"] == 0.5
        assert detail["first"]["threshold"] == 0.1
        assert detail["first"]["row_id"] == sorted(ids)[3]
        notes = received(listen, timeout=0.5)
        assert [n["id"] for n in notes] == [event["id"]]
    finally:
        listen.close()


def test_copy_fires_once_per_statement_and_model(conn, db_url):
    # details count firings: one per statement and model, however many rows.
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
        assert m["details"]["error_rate"]["count"] == 1
        assert m["details"]["error_rate"]["first"]["error_rate"] == 0.5
        assert other["details"]["error_rate"]["count"] == 1
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

    # A second COPY extends the pending event: it counts, first is kept.
    copy_rows(conn, [("m", {"i": i}, None, None, 0.9) for i in range(4)])
    m = only_event(conn, "m")
    assert m["details"]["error_rate"]["count"] == 2
    assert m["details"]["error_rate"]["first"]["error_rate"] == 0.5
    assert m["details"]["error_rate"]["latest"]["error_rate"] == 0.9


def test_copy_with_no_row_over_threshold_records_nothing(conn):
    copy_rows(conn, [("m", {"i": i}, None, None, 0.1) for i in range(50)])
    assert events(conn) == []


# ---------------------------------------------------------------------------
# The rolling error rate (error_window, min_error_rows, error_rate_margin)
# ---------------------------------------------------------------------------
# Only a wrong prediction can raise the rate, so only a statement that brings
# one (an INSERT, or an UPDATE that makes a row wrong) reads the window.


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
    ids = insert_scored_batch(conn, "m", [False, True])  # 5 of 6 wrong
    event = only_event(conn, "m")
    assert event["reason"] == "error_rate"
    detail = event["details"]["error_rate"]["first"]
    assert detail["rolling_error_rate"] == pytest.approx(5 / 6)
    assert detail["window_rows"] == 6
    assert detail["rolling_threshold"] == 0.1
    assert detail["newest_row_id"] == ids[-1]
    assert "error_rate" not in detail  # no row reported an error_rate itself


def test_a_correct_prediction_does_not_read_the_window(conn, small_window):
    insert_scored(conn, "m", [True] * 4)
    insert_scored(conn, "m", [False])          # 4 of 5: over, but correct: not read
    assert events(conn) == []
    row = insert_scored_batch(conn, "m", [True])[0]  # the next wrong one fires it
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert (detail["window_rows"], detail["newest_row_id"]) == (6, row)


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
    insert_scored_batch(conn, "m", [True])
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 50


def test_only_the_newest_error_window_rows_count(conn, small_window):
    insert_scored_batch(conn, "m", [True] * 10)
    assert pending_event(conn, "m") is not None
    cancel_pending(conn)
    # Ten good rows push every bad one out of the 10-row window.
    insert_scored_batch(conn, "m", [False] * 10)
    insert_scored(conn, "m", [True])  # 1/10
    assert pending_event(conn, "m") is None
    insert_scored(conn, "m", [True])  # 2/10
    event = pending_event(conn, "m")
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


def test_labels_of_a_batch_arriving_in_one_update_fire_once(conn, small_window):
    # The ETL pattern: predictions first, labels later, in one UPDATE.
    ids = [insert_row(conn, "m", prediction="b") for _ in range(8)]
    conn.execute("UPDATE training_data SET label = CASE WHEN id %% 2 = 0 THEN 'a' ELSE 'b' END "
                 "WHERE id = ANY(%s)", (ids,))
    detail = only_event(conn, "m")["details"]["error_rate"]
    assert detail["count"] == 1
    assert detail["first"]["window_rows"] == 8
    assert detail["first"]["rolling_error_rate"] == pytest.approx(0.5)


def test_correcting_a_label_in_the_window_is_counted(conn, small_window):
    ids = insert_scored_batch(conn, "m", [False] * 9 + [True])  # 0.1
    assert events(conn) == []
    conn.execute("UPDATE training_data SET label = 'z' WHERE id = %s", (ids[0],))  # now wrong
    detail = only_event(conn, "m")["details"]["error_rate"]["first"]
    assert detail["window_rows"] == 10
    assert detail["rolling_error_rate"] == pytest.approx(0.2)


def test_window_restarts_after_the_rows_a_successful_retrain_learned_from(conn, small_window):
    insert_scored_batch(conn, "m", [True] * 10)
    learned = insert_scored_batch(conn, "m", [True] * 3)
    cancel_pending(conn)
    unseen = insert_row(conn, "m", prediction="b")  # arrived while it trained
    finish_retrain(conn, "m", trained_through_id=learned[-1])
    insert_scored(conn, "m", [True] * 3)
    assert pending_event(conn, "m") is None  # 3 scored rows since
    conn.execute("UPDATE training_data SET label = 'a' WHERE id = %s", (unseen,))  # wrong
    assert pending_event(conn, "m") is None  # 4
    insert_scored(conn, "m", [True])
    event = pending_event(conn, "m")
    assert event["details"]["error_rate"]["first"]["window_rows"] == 5


def test_window_does_not_restart_after_a_failed_retrain(conn, small_window):
    insert_scored_batch(conn, "m", [True] * 10)
    cancel_pending(conn)
    finish_retrain(conn, "m", status="failed")
    insert_scored(conn, "m", [False])
    insert_scored(conn, "m", [True])
    event = pending_event(conn, "m")
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


def test_single_row_inserts_follow_policy_changes(conn):
    insert_row(conn, "m")
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


# ---------------------------------------------------------------------------
# The margin over the champion's own holdout error
# ---------------------------------------------------------------------------


def _noisy_champion(conn, accuracy):
    """m has a champion that scored ``accuracy`` on its holdout, and learned
    from every row so far."""
    set_policy(conn, "m", error_window=20, min_error_rows=20)
    finish_retrain(conn, "m", accuracy=accuracy, promoted=True)


@pytest.mark.parametrize(("wrong", "fires"), [(3, False), (4, False), (5, True)])
def test_the_rolling_rate_fires_above_the_champions_error_plus_the_margin(conn, wrong, fires):
    # A champion with 15% holdout error: the limit is 0.15 + 0.05 = 0.2, not 0.1.
    _noisy_champion(conn, accuracy=0.85)
    insert_scored_batch(conn, "m", [True] * wrong + [False] * (20 - wrong))
    event = pending_event(conn, "m")
    assert (event is not None) == fires
    if fires:
        detail = event["details"]["error_rate"]["first"]
        assert detail["rolling_threshold"] == pytest.approx(0.2)
        assert detail["champion_error"] == pytest.approx(0.15)
        assert detail["rolling_error_rate"] == pytest.approx(0.25)


def test_a_good_champion_keeps_the_threshold(conn):
    _noisy_champion(conn, accuracy=0.98)   # 0.02 + 0.05 is under 0.1
    insert_scored_batch(conn, "m", [True] * 3 + [False] * 17)  # 0.15
    assert pending_event(conn, "m")["details"]["error_rate"]["first"]["rolling_threshold"] == 0.1


def test_no_margin_means_the_threshold_alone(conn):
    _noisy_champion(conn, accuracy=0.85)
    set_policy(conn, "m", error_rate_margin=None)
    insert_scored_batch(conn, "m", [True] * 3 + [False] * 17)  # 0.15 > 0.1
    assert pending_event(conn, "m") is not None


def test_the_margin_leaves_the_rows_own_error_rate_alone(conn):
    _noisy_champion(conn, accuracy=0.7)
    insert_row(conn, "m", error_rate=0.15)
    assert pending_event(conn, "m")["details"]["error_rate"]["first"]["threshold"] == 0.1


# ---------------------------------------------------------------------------
# Concurrency and a random run against a recount
# ---------------------------------------------------------------------------


def test_concurrent_scored_inserts_are_all_counted_in_the_window(conn, db_url, small_window):
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
    # Six wrong predictions out of six scored rows, with min_error_rows = 5:
    # the second writer waited for the first and read its rows.
    event = pending_event(conn, "m")
    assert event["details"]["error_rate"]["latest"]["window_rows"] == 6


def test_a_metric_of_a_model_does_not_wait_for_an_open_writer_of_it(conn, db_url, small_window):
    with psycopg.connect(db_url) as etl:
        insert_scored(etl, "m", [True] * 2)  # holds the model's lock to its commit
        with psycopg.connect(db_url, autocommit=True) as evaluation:
            evaluation.execute("SET lock_timeout = '5s'")
            evaluation.execute(
                "INSERT INTO model_metrics (model_name, accuracy) VALUES ('m', 0.99)")
        etl.commit()
    assert events(conn) == []


def test_window_decisions_match_a_recount_after_every_statement(conn):
    """A long random run of single-row and multi-row inserts, label updates,
    deletes and successful retrains, with the error rate moving across the
    threshold and back: after every statement that brings a wrong
    prediction, the model fires exactly when a recount of its window from
    the table says so; other statements never fire."""
    window, min_rows = 40, 10
    set_policy(conn, "m", error_window=window, min_error_rows=min_rows,
               error_rate_threshold=0.1, cooldown="0", schedule_interval=None)
    rnd = random.Random(20261206)
    limit = 0.1

    def window_now():
        after = conn.execute(
            "SELECT coalesce((SELECT trained_through_id FROM retrain_events "
            "WHERE model_name = 'm' AND status = 'succeeded' ORDER BY finished_at DESC "
            "LIMIT 1), 0)").fetchone()[0]
        rows = conn.execute(
            "SELECT label <> prediction FROM training_data WHERE model_name = 'm' "
            "AND label IS NOT NULL AND prediction IS NOT NULL AND id > %s "
            "ORDER BY id DESC LIMIT %s", (after, window)).fetchall()
        return len(rows), sum(1 for (wrong,) in rows if wrong)

    def firings():
        return conn.execute(
            "SELECT coalesce(sum((details -> 'error_rate' ->> 'count')::bigint), 0) "
            "FROM retrain_events WHERE model_name = 'm'").fetchone()[0]

    seen = firings()
    fired_at_all = 0
    for step in range(400):
        wrong_share = 0.02 + 0.2 * (1 + math.sin(step / 25)) / 2
        action = rnd.random()
        brings_wrong = False
        if action < 0.70:
            wrong = rnd.random() < wrong_share
            insert_scored(conn, "m", [wrong])
            brings_wrong = wrong
        elif action < 0.82:
            outcomes = [rnd.random() < wrong_share for _ in range(rnd.randint(2, 6))]
            insert_scored_batch(conn, "m", outcomes)
            brings_wrong = any(outcomes)
        elif action < 0.92:
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM training_data WHERE model_name = 'm' "
                "ORDER BY id DESC LIMIT 60").fetchall()]
            row = rnd.choice(ids)
            label = rnd.choice(["a", "b", None])
            conn.execute("UPDATE training_data SET label = %s WHERE id = %s", (label, row))
            brings_wrong = conn.execute(
                "SELECT coalesce(label <> prediction, false) FROM training_data WHERE id = %s",
                (row,)).fetchone()[0]
        elif action < 0.96:
            conn.execute("DELETE FROM training_data WHERE id = (SELECT max(id) FROM "
                         "training_data WHERE model_name = 'm')")
        else:
            cancel_pending(conn)
            finish_retrain(conn, "m")
        rows, errors = window_now()
        expected = brings_wrong and rows >= min_rows and errors / rows > limit
        now = firings()
        assert (now > seen) == expected, (step, rows, errors, brings_wrong)
        fired_at_all += expected
        seen = now
    assert fired_at_all > 20  # the run did cross the threshold, often
