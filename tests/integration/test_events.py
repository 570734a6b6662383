"""SPEC section 2 rules (one pending event, cooldown, manual, disabled and
per-model policies, decisions in the writing transaction, concurrency),
section 3 (NOTIFY), and the model_status view."""

import datetime as dt
import threading

import psycopg
import pytest

from tests.helpers import (
    cancel_pending,
    copy_rows,
    events,
    finish_retrain,
    insert_metric,
    insert_row,
    insert_scored_batch,
    listener,
    only_event,
    pending_event,
    received,
    run_concurrently,
    set_policy,
    set_status,
    wait_until_blocked,
)


@pytest.fixture
def listen(db_url):
    conn = listener(db_url)
    yield conn
    conn.close()


def _db_now(conn):
    return conn.execute("SELECT now()").fetchone()[0]


# ---------------------------------------------------------------------------
# One pending event per model
# ---------------------------------------------------------------------------


def test_second_firing_extends_the_pending_event(conn, listen):
    m1 = insert_metric(conn, "m", accuracy=0.79)
    event = only_event(conn, "m")
    assert event["reason"] == "performance"
    m2 = insert_metric(conn, "m", accuracy=0.78)
    row = insert_row(conn, "m", error_rate=0.5)
    m3 = insert_metric(conn, "m", accuracy=0.77)

    extended = only_event(conn, "m")
    assert extended["id"] == event["id"]
    assert extended["status"] == "pending"
    assert extended["reason"] == "performance"          # the first that fired
    assert extended["reasons"] == ["performance", "error_rate"]  # each once
    perf = extended["details"]["performance"]
    assert perf["count"] == 3
    assert perf["first"]["accuracy"] == 0.79 and perf["first"]["metric_id"] == m1
    assert perf["latest"]["accuracy"] == 0.77 and perf["latest"]["metric_id"] == m3
    assert m2 not in (perf["first"]["metric_id"], perf["latest"]["metric_id"])
    err = extended["details"]["error_rate"]
    assert err["count"] == 1
    assert err["first"]["row_id"] == row == err["latest"]["row_id"]

    # Every firing notifies again, with the reasons so far.
    notes = received(listen, timeout=1.0, stop_after=4)
    assert [n["id"] for n in notes] == [event["id"]] * 4
    assert [n["reasons"] for n in notes] == [
        ["performance"],
        ["performance"],
        ["performance", "error_rate"],
        ["performance", "error_rate"],
    ]


def test_details_stay_small_however_often_a_reason_fires(conn):
    for i in range(30):
        insert_row(conn, "m", error_rate=0.2 + i / 100)
    event = only_event(conn, "m")
    assert set(event["details"]) == {"error_rate"}
    detail = event["details"]["error_rate"]
    assert set(detail) == {"first", "latest", "count"}
    assert detail["count"] == 30
    assert detail["first"]["error_rate"] == 0.2
    assert detail["latest"]["error_rate"] == pytest.approx(0.49)


def test_firing_while_an_event_runs_queues_one_new_pending_event(conn):
    insert_row(conn, "m", error_rate=0.5)
    running = only_event(conn, "m")
    set_status(conn, running["id"], "running")

    insert_metric(conn, "m", accuracy=0.5)
    insert_row(conn, "m", error_rate=0.6)
    rows = events(conn, "m")
    assert len(rows) == 2
    assert rows[0]["id"] == running["id"] and rows[0]["status"] == "running"
    assert rows[0]["reasons"] == ["error_rate"]
    assert rows[0]["details"]["error_rate"]["count"] == 1
    new = rows[1]
    assert new["status"] == "pending"
    assert new["reason"] == "performance"
    assert new["reasons"] == ["performance", "error_rate"]


def test_models_have_separate_pending_events(conn):
    insert_row(conn, "a", error_rate=0.5)
    insert_row(conn, "b", error_rate=0.5)
    insert_row(conn, "a", error_rate=0.5)
    assert [(e["model_name"], e["status"]) for e in events(conn)] == [
        ("a", "pending"), ("b", "pending")
    ]


# ---------------------------------------------------------------------------
# Cooldown
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_event_within_cooldown_runs_after_finish_plus_cooldown(conn, status):
    finished = finish_retrain(conn, "m", status=status, finished_ago="10 minutes")
    insert_row(conn, "m", error_rate=0.5)
    event = pending_event(conn, "m")
    finished_at = conn.execute(
        "SELECT finished_at FROM retrain_events WHERE id = %s", (finished,)
    ).fetchone()[0]
    assert event["run_after"] == finished_at + dt.timedelta(hours=1)
    assert event["run_after"] > _db_now(conn) + dt.timedelta(minutes=45)


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_event_after_cooldown_runs_now(conn, status):
    finish_retrain(conn, "m", status=status, finished_ago="61 minutes")
    insert_row(conn, "m", error_rate=0.5)
    event = pending_event(conn, "m")
    assert event["run_after"] == event["created_at"]
    assert event["run_after"] <= _db_now(conn)


def test_event_of_a_never_trained_model_runs_now(conn):
    insert_metric(conn, "m", accuracy=0.5)
    event = pending_event(conn, "m")
    assert event["run_after"] == event["created_at"]


def test_cooldown_counts_from_the_last_finished_retrain(conn):
    finish_retrain(conn, "m", status="succeeded", finished_ago="3 hours")
    failed = finish_retrain(conn, "m", status="failed", finished_ago="20 minutes")
    # A cancelled event is no retrain.
    conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status, finished_at) "
        "VALUES ('m', 'manual', '{manual}', 'cancelled', now())"
    )
    insert_metric(conn, "m", accuracy=0.5)
    expected = conn.execute(
        "SELECT finished_at + interval '1 hour' FROM retrain_events WHERE id = %s", (failed,)
    ).fetchone()[0]
    assert pending_event(conn, "m")["run_after"] == expected


@pytest.mark.parametrize(("cooldown", "deferred"), [("30 minutes", True), ("5 minutes", False),
                                                    ("0", False)])
def test_cooldown_comes_from_the_models_policy(conn, cooldown, deferred):
    set_policy(conn, "m", cooldown=cooldown)
    finished = finish_retrain(conn, "m", finished_ago="10 minutes")
    insert_row(conn, "m", error_rate=0.5)
    event = pending_event(conn, "m")
    if deferred:
        expected = conn.execute(
            "SELECT finished_at + %s::interval FROM retrain_events WHERE id = %s",
            (cooldown, finished),
        ).fetchone()[0]
        assert event["run_after"] == expected
    else:
        assert event["run_after"] == event["created_at"]


def test_extending_keeps_run_after(conn):
    insert_row(conn, "m", error_rate=0.5)
    event = pending_event(conn, "m")
    assert event["run_after"] == event["created_at"]
    finish_retrain(conn, "m", status="failed")  # a cooldown starts now
    insert_metric(conn, "m", accuracy=0.5)
    extended = pending_event(conn, "m")
    assert extended["id"] == event["id"]
    assert extended["reasons"] == ["error_rate", "performance"]
    assert extended["run_after"] == event["run_after"]


def test_extending_a_deferred_event_keeps_its_run_after(conn):
    finish_retrain(conn, "m", finished_ago="10 minutes")
    insert_row(conn, "m", error_rate=0.5)
    deferred = pending_event(conn, "m")["run_after"]
    conn.execute("UPDATE retrain_policies SET cooldown = '3 hours' WHERE model_name = 'default'")
    insert_metric(conn, "m", accuracy=0.5)
    assert pending_event(conn, "m")["run_after"] == deferred


# ---------------------------------------------------------------------------
# manual
# ---------------------------------------------------------------------------


def test_manual_request_skips_the_cooldown(conn):
    insert_row(conn, "m")
    finish_retrain(conn, "m")  # just finished: cooldown for an hour
    event_id = conn.execute("SELECT request_retrain('m')").fetchone()[0]
    event = pending_event(conn, "m")
    assert event["id"] == event_id
    assert event["reason"] == "manual"
    assert event["reasons"] == ["manual"]
    assert event["run_after"] == event["created_at"]
    assert event["details"]["manual"]["count"] == 1
    assert "requested_by" in event["details"]["manual"]["first"]


def test_manual_request_makes_a_deferred_pending_event_due(conn):
    finish_retrain(conn, "m", finished_ago="1 minute")
    insert_row(conn, "m", error_rate=0.5)
    deferred = pending_event(conn, "m")
    assert deferred["run_after"] > _db_now(conn)
    event_id = conn.execute("SELECT request_retrain('m')").fetchone()[0]
    event = pending_event(conn, "m")
    assert event["id"] == event_id == deferred["id"]
    assert event["reason"] == "error_rate"
    assert event["reasons"] == ["error_rate", "manual"]
    assert event["run_after"] <= _db_now(conn)


def test_manual_request_works_on_a_disabled_policy(conn, listen):
    set_policy(conn, "m", enabled=False)
    insert_row(conn, "m", error_rate=0.9)
    assert events(conn) == []
    event_id = conn.execute("SELECT request_retrain('m')").fetchone()[0]
    event = only_event(conn, "m")
    assert event["id"] == event_id
    assert event["reason"] == "manual"
    assert received(listen, timeout=1.0, stop_after=1) == [
        {"id": event_id, "model_name": "m", "reasons": ["manual"]}
    ]


def test_manual_request_for_a_model_known_only_by_its_policy(conn):
    set_policy(conn, "fresh")
    conn.execute("SELECT request_retrain('fresh')")
    assert only_event(conn, "fresh")["reason"] == "manual"


def test_manual_request_for_an_unknown_model_raises_naming_it(conn):
    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT request_retrain('no-such-model')")
    assert "no-such-model" in str(err.value)
    assert events(conn) == []


# ---------------------------------------------------------------------------
# Disabled and per-model policies
# ---------------------------------------------------------------------------


def test_disabled_policy_records_nothing_automatically(conn):
    set_policy(conn, "m", enabled=False, drift_alone=True, error_window=10, min_error_rows=5)
    row = insert_row(conn, "m", error_rate=0.9)
    conn.execute("UPDATE training_data SET error_rate = 0.8, label = 'x' WHERE id = %s", (row,))
    copy_rows(conn, [("m", {"i": i}, "a", "b", 0.7) for i in range(20)])
    insert_scored_batch(conn, "m", [True] * 10)
    insert_metric(conn, "m", accuracy=0.9)
    insert_metric(conn, "m", accuracy=0.1, drift_score=2.0)
    insert_metric(conn, "m", drift_score=2.0)
    assert events(conn) == []

    # Enabling it again: the next firing is recorded.
    set_policy(conn, "m", enabled=True)
    insert_row(conn, "m", error_rate=0.9)
    assert only_event(conn, "m")["reason"] == "error_rate"


def test_disabled_default_policy_disables_models_without_their_own_row(conn):
    set_policy(conn, "default", enabled=False)
    set_policy(conn, "own", enabled=True)
    insert_row(conn, "inherits", error_rate=0.9)
    insert_row(conn, "own", error_rate=0.9)
    assert [e["model_name"] for e in events(conn)] == ["own"]


def test_model_policy_row_overrides_the_default_row(conn):
    set_policy(conn, "default", error_rate_threshold=0.5, min_accuracy=0.5)
    set_policy(conn, "m", error_rate_threshold=0.2, min_accuracy=0.9)
    insert_row(conn, "m", error_rate=0.3)
    insert_row(conn, "n", error_rate=0.3)
    insert_metric(conn, "m", accuracy=0.85)
    insert_metric(conn, "n", accuracy=0.85)
    assert [(e["model_name"], e["reasons"]) for e in events(conn)] == [
        ("m", ["error_rate", "performance"])
    ]
    # The default row applies to n: above its thresholds it fires.
    insert_row(conn, "n", error_rate=0.6)
    assert pending_event(conn, "n")["details"]["error_rate"]["first"]["threshold"] == 0.5


def test_model_policy_disabled_while_default_enabled(conn):
    set_policy(conn, "m", enabled=False)
    insert_row(conn, "m", error_rate=0.9)
    insert_row(conn, "n", error_rate=0.9)
    assert [e["model_name"] for e in events(conn)] == ["n"]


# ---------------------------------------------------------------------------
# NOTIFY, and decisions inside the writing transaction
# ---------------------------------------------------------------------------


def test_notification_is_delivered_only_after_commit(db_url, conn, listen):
    with psycopg.connect(db_url) as writer:  # not autocommit: an open transaction
        row = insert_row(writer, "m", error_rate=0.5)
        assert received(listen, timeout=0.3) == []
        assert events(conn) == []  # not visible before commit either
        writer.commit()
    notes = received(listen, timeout=2.0, stop_after=1)
    event = only_event(conn, "m")
    assert notes == [{"id": event["id"], "model_name": "m", "reasons": ["error_rate"]}]
    assert event["details"]["error_rate"]["first"]["row_id"] == row


def test_notification_payload_has_exactly_id_model_name_reasons(conn, listen):
    insert_metric(conn, "m", accuracy=0.5, drift_score=0.3)
    (note,) = received(listen, timeout=2.0, stop_after=1)
    assert set(note) == {"id", "model_name", "reasons"}
    assert note["id"] == only_event(conn, "m")["id"]
    assert note["model_name"] == "m"
    assert note["reasons"] == ["performance", "drift_and_accuracy"]


def test_rolled_back_insert_leaves_no_event_and_no_notification(db_url, conn, listen):
    with psycopg.connect(db_url) as writer:
        insert_row(writer, "m", error_rate=0.5)
        insert_metric(writer, "m", accuracy=0.1)
        writer.rollback()
    assert events(conn) == []
    assert received(listen, timeout=0.5) == []


def test_rolled_back_extension_leaves_the_pending_event_unchanged(db_url, conn, listen):
    insert_row(conn, "m", error_rate=0.5)
    before = only_event(conn, "m")
    assert len(received(listen, timeout=1.0, stop_after=1)) == 1
    with psycopg.connect(db_url) as writer:
        insert_metric(writer, "m", accuracy=0.1)
        insert_row(writer, "m", error_rate=0.7)
        writer.rollback()
    assert only_event(conn, "m") == before
    assert received(listen, timeout=0.5) == []


def test_rolled_back_request_retrain_leaves_nothing(db_url, conn, listen):
    insert_row(conn, "m")
    with psycopg.connect(db_url) as writer:
        writer.execute("SELECT request_retrain('m')")
        writer.rollback()
    assert events(conn) == []
    assert received(listen, timeout=0.5) == []


def test_events_recorded_while_nobody_listens_stay_pending(db_url, conn):
    insert_row(conn, "m", error_rate=0.5)
    late = listener(db_url)
    try:
        assert received(late, timeout=0.3) == []  # notifications are not replayed
    finally:
        late.close()
    assert pending_event(conn, "m") is not None  # ...but the event is there


# ---------------------------------------------------------------------------
# Concurrent writers
# ---------------------------------------------------------------------------


def test_concurrent_writers_never_create_two_pending_events(db_url, conn):
    workers, rounds = 6, 5

    def work(c, i):
        for r in range(rounds):
            if (i + r) % 2:
                insert_row(c, "m", error_rate=0.5)
            else:
                insert_metric(c, "m", accuracy=0.5)
        return i

    assert run_concurrently(db_url, workers, work) == list(range(workers))
    rows = events(conn, "m")
    assert len(rows) == 1
    assert rows[0]["status"] == "pending"
    details = rows[0]["details"]
    # No firing was lost in the merges.
    assert details["error_rate"]["count"] + details["performance"]["count"] == workers * rounds
    assert details["error_rate"]["count"] == sum(
        1 for i in range(workers) for r in range(rounds) if (i + r) % 2
    )
    assert sorted(rows[0]["reasons"]) == ["error_rate", "performance"]


def test_concurrent_transactions_of_several_statements_never_deadlock(db_url, conn):
    workers = 6

    def work(c, i):
        with c.transaction():
            copy_rows(c, [(m, {"i": i}, "a", "b", 0.5) for m in ("a", "b", "c")])
            insert_row(c, "b", error_rate=0.9)
            insert_metric(c, "b", accuracy=0.1)
        return i

    assert run_concurrently(db_url, workers, work) == list(range(workers))
    pending = conn.execute(
        "SELECT model_name, count(*) FROM retrain_events WHERE status = 'pending' "
        "GROUP BY model_name ORDER BY model_name"
    ).fetchall()
    assert pending == [("a", 1), ("b", 1), ("c", 1)]
    assert len(events(conn)) == 3
    assert pending_event(conn, "b")["details"]["error_rate"]["count"] == 2 * workers
    assert pending_event(conn, "b")["details"]["performance"]["count"] == workers


def test_metric_then_training_rows_in_one_transaction_does_not_deadlock(db_url, conn):
    set_policy(conn, "m", error_window=10, min_error_rows=5)
    insert_row(conn, "m")  # a known model
    errors = []
    with psycopg.connect(db_url) as evaluator:
        insert_metric(evaluator, "m", accuracy=0.1)  # fires: holds m's pending event

        def etl():
            try:
                with psycopg.connect(db_url) as c:
                    insert_scored_batch(c, "m", [True] * 6)  # window, then pending event
                    c.commit()
            except psycopg.Error as exc:
                errors.append(exc)

        thread = threading.Thread(target=etl)
        thread.start()
        wait_until_blocked(conn)
        try:
            insert_scored_batch(evaluator, "m", [True] * 6)  # then labelled rows
            evaluator.commit()
        except psycopg.Error as exc:
            errors.append(exc)
        thread.join(30)
    assert errors == []
    assert conn.execute("SELECT count(*) FROM training_data").fetchone()[0] == 13
    event = only_event(conn, "m")
    assert event["reasons"] == ["performance", "error_rate"]


# ---------------------------------------------------------------------------
# model_status
# ---------------------------------------------------------------------------


def _status(conn):
    cur = conn.execute("SELECT * FROM model_status ORDER BY model_name")
    names = [c.name for c in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def test_model_status_one_row_per_model(conn):
    # a: a champion, a later non-promoted retrain, metrics, a pending event.
    champion = finish_retrain(conn, "a", promoted=True, accuracy=0.93, finished_ago="2 days")
    conn.execute("UPDATE retrain_events SET model_version = '3' WHERE id = %s", (champion,))
    later = finish_retrain(conn, "a", promoted=False, accuracy=0.97, finished_ago="1 day")
    insert_metric(conn, "a", accuracy=0.91, drift_score=0.05)
    insert_metric(conn, "a", drift_score=0.1)
    insert_metric(conn, "a", accuracy=0.92)
    insert_row(conn, "a", error_rate=0.5)
    # b: only a policy row.  c: only training data, and a running retrain.
    set_policy(conn, "b")
    insert_row(conn, "c")
    running = conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status) "
        "VALUES ('c', 'manual', '{manual}', 'running') RETURNING id"
    ).fetchone()[0]

    status = _status(conn)
    assert sorted(status) == ["a", "b", "c"]
    assert conn.execute("SELECT count(*) FROM model_status").fetchone()[0] == 3

    a = status["a"]
    assert a["champion_version"] == "3"
    assert a["champion_accuracy"] == 0.93
    assert a["latest_accuracy"] == 0.92
    assert a["latest_drift_score"] == 0.1
    assert a["last_retrain_event_id"] == later
    assert a["last_retrain_status"] == "succeeded"
    assert a["pending_event_id"] == pending_event(conn, "a")["id"]
    assert a["pending_reasons"] == ["error_rate"]
    assert a["running_event_id"] is None

    b = status["b"]
    assert (b["champion_version"], b["latest_accuracy"], b["pending_event_id"],
            b["last_retrain_event_id"]) == (None, None, None, None)

    c = status["c"]
    assert c["running_event_id"] == running
    assert c["pending_event_id"] is None
    assert c["champion_accuracy"] is None


# ---------------------------------------------------------------------------
# Futile retrains back off
# ---------------------------------------------------------------------------


def _finished(conn, model: str, *, promoted: bool, reason: str = "error_rate",
              ago: str = "0 seconds") -> None:
    """A succeeded retrain of the model, promoted or not, of the given reason."""
    conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status, started_at, "
        "finished_at, accuracy, promoted, trained_through_id) "
        "VALUES (%s, %s, ARRAY[%s], 'succeeded', now(), clock_timestamp() - %s::interval, "
        "0.8, %s, 0)", (model, reason, reason, ago, promoted))


def _attention(conn, model: str) -> dict:
    cur = conn.execute("SELECT futile_retrains, needs_attention FROM model_status "
                       "WHERE model_name = %s", (model,))
    return dict(zip([c.name for c in cur.description], cur.fetchone()))


def _deferred_by(conn, model: str) -> float:
    """Seconds between the model's last finished retrain and the run_after
    of a new automatic event recorded now."""
    insert_metric(conn, model, accuracy=0.1)                        # fires performance
    return conn.execute(
        "SELECT extract(epoch FROM e.run_after - (SELECT max(finished_at) FROM retrain_events "
        "WHERE model_name = %s AND status = 'succeeded')) FROM retrain_events AS e "
        "WHERE e.model_name = %s AND e.status = 'pending'", (model, model)).fetchone()[0]


def test_futile_retrains_defer_automatic_events_by_a_growing_delay(conn):
    set_policy(conn, "m", cooldown="0", futile_retrains=3, futile_backoff="1 hour")
    _finished(conn, "m", promoted=True, ago="1 hour")
    for _ in range(2):
        _finished(conn, "m", promoted=False)
    assert _attention(conn, "m") == {"futile_retrains": 2, "needs_attention": None}
    assert _deferred_by(conn, "m") < 5                              # not yet: due now
    cancel_pending(conn, "m")

    _finished(conn, "m", promoted=False)                            # the third in a row
    assert _deferred_by(conn, "m") == pytest.approx(3600, abs=5)
    status = _attention(conn, "m")
    assert status["futile_retrains"] == 3
    assert "3 automatic retrains in a row were not promoted" in status["needs_attention"]
    cancel_pending(conn, "m")

    _finished(conn, "m", promoted=False)                            # doubles
    assert _deferred_by(conn, "m") == pytest.approx(7200, abs=5)
    # Nothing is dropped: the conditions keep extending the pending event.
    insert_metric(conn, "m", accuracy=0.2)
    assert pending_event(conn, "m")["details"]["performance"]["count"] == 2


def test_the_backoff_is_at_most_seven_days(conn):
    set_policy(conn, "m", cooldown="0", futile_retrains=1, futile_backoff="1 day")
    for _ in range(10):
        _finished(conn, "m", promoted=False)
    assert _deferred_by(conn, "m") == pytest.approx(7 * 86400, abs=5)


@pytest.mark.parametrize("reset", ["promotion", "manual"])
def test_a_promotion_or_a_manual_request_resets_the_backoff(conn, reset):
    set_policy(conn, "m", cooldown="0", futile_retrains=2, futile_backoff="1 hour")
    for _ in range(3):
        _finished(conn, "m", promoted=False)
    assert _attention(conn, "m")["needs_attention"] is not None
    if reset == "promotion":
        _finished(conn, "m", promoted=True)
    else:
        # The manual request is due at once, and once it has run the streak is over.
        event_id = conn.execute("SELECT request_retrain('m')").fetchone()[0]
        assert pending_event(conn, "m")["run_after"] <= conn.execute("SELECT now()").fetchone()[0]
        conn.execute("UPDATE retrain_events SET status = 'succeeded', finished_at = "
                     "clock_timestamp(), promoted = false, started_at = now() WHERE id = %s",
                     (event_id,))
    assert _attention(conn, "m") == {"futile_retrains": 0, "needs_attention": None}
    assert _deferred_by(conn, "m") < 5
