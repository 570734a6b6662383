"""SPEC section 2, reason `schedule`: check_retrain_schedules()."""

import time

import pytest

from tests.helpers import (
    cancel_pending,
    events,
    finish_retrain,
    insert_metric,
    insert_row,
    insert_scored_batch,
    only_event,
    pending_event,
    run_concurrently,
    set_policy,
    set_status,
)


def check(conn) -> list[int]:
    return [r[0] for r in conn.execute("SELECT * FROM check_retrain_schedules()").fetchall()]


def trained(conn, model: str, ago: str, **kwargs) -> int:
    """A model with training data whose retrain finished `ago`."""
    insert_row(conn, model, label="a")
    return finish_retrain(conn, model, finished_ago=ago, **kwargs)


# ---------------------------------------------------------------------------
# Never trained: min_training_rows labelled rows
# ---------------------------------------------------------------------------


def test_never_trained_model_with_enough_labelled_rows_gets_a_schedule_event(conn):
    insert_scored_batch(conn, "m", [False] * 50)
    ids = check(conn)
    event = only_event(conn, "m")
    assert ids == [event["id"]]
    assert event["reason"] == "schedule"
    assert event["reasons"] == ["schedule"]
    assert event["status"] == "pending"
    detail = event["details"]["schedule"]
    assert detail["count"] == 1
    assert detail["first"]["last_success"] is None
    assert "period_start" in detail["first"]
    assert detail["first"]["schedule_interval"] is not None


def test_never_trained_model_with_too_few_labelled_rows_gets_none(conn):
    insert_scored_batch(conn, "m", [False] * 49)
    for _ in range(10):
        insert_row(conn, "m")  # unlabelled rows do not count
    insert_scored_batch(conn, "other", [False] * 60)  # nor do other models' rows
    cancel_pending(conn)
    check(conn)
    assert events(conn, "m") == []
    assert [e["reason"] for e in events(conn, "other")] == ["schedule"]


def test_min_training_rows_comes_from_the_models_policy(conn):
    set_policy(conn, "m", min_training_rows=5)
    insert_scored_batch(conn, "m", [False] * 5)
    insert_scored_batch(conn, "n", [False] * 5)
    check(conn)
    assert [e["model_name"] for e in events(conn)] == ["m"]


def test_never_trained_model_with_only_a_failed_retrain_is_still_never_trained(conn):
    set_policy(conn, "m", min_training_rows=5)
    insert_scored_batch(conn, "m", [False] * 5)
    finish_retrain(conn, "m", status="failed", finished_ago="2 hours")
    check(conn)
    event = pending_event(conn, "m")
    assert event is not None and event["reason"] == "schedule"
    assert event["details"]["schedule"]["first"]["last_success"] is None


# ---------------------------------------------------------------------------
# Trained: schedule_interval since the last success
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("ago", "fires"), [("6 days 23 hours", False), ("7 days 1 minute", True),
                                            ("30 days", True), ("1 minute", False)])
def test_schedule_interval_since_the_last_success(conn, ago, fires):
    finished = trained(conn, "m", ago)
    ids = check(conn)
    pending = events(conn, "m", status="pending")
    if not fires:
        assert ids == []
        assert pending == []
        return
    assert len(pending) == 1
    assert ids == [pending[0]["id"]]
    assert pending[0]["reason"] == "schedule"
    detail = pending[0]["details"]["schedule"]["first"]
    finished_at = conn.execute(
        "SELECT to_jsonb(finished_at) #>> '{}' FROM retrain_events WHERE id = %s", (finished,)
    ).fetchone()[0]
    assert detail["last_success"] == finished_at


def test_only_successful_retrains_reset_the_schedule(conn):
    trained(conn, "m", "8 days")
    finish_retrain(conn, "m", status="failed", finished_ago="10 minutes")
    check(conn)
    event = pending_event(conn, "m")
    assert event is not None and event["reason"] == "schedule"
    # Recorded within the cooldown of the failed run: deferred.
    expected = conn.execute(
        "SELECT max(finished_at) + interval '1 hour' FROM retrain_events "
        "WHERE model_name = 'm' AND status = 'failed'"
    ).fetchone()[0]
    assert event["run_after"] == expected


def test_latest_success_counts(conn):
    trained(conn, "m", "20 days")
    finish_retrain(conn, "m", finished_ago="2 days")
    assert check(conn) == []
    assert events(conn, "m", status="pending") == []


def test_schedule_interval_comes_from_the_models_policy(conn):
    set_policy(conn, "m", schedule_interval="1 hour")
    trained(conn, "m", "2 hours")
    trained(conn, "n", "2 hours")  # default: 7 days
    check(conn)
    assert [e["model_name"] for e in events(conn, status="pending")] == ["m"]


# ---------------------------------------------------------------------------
# One event per period
# ---------------------------------------------------------------------------


def test_calling_again_in_the_same_period_records_nothing_more(conn):
    trained(conn, "m", "8 days")
    first = check(conn)
    assert len(first) == 1
    assert check(conn) == []
    assert check(conn) == []
    event = pending_event(conn, "m")
    assert event["details"]["schedule"]["count"] == 1
    # Even once the period's event is gone from the queue.
    cancel_pending(conn)
    assert check(conn) == []
    assert events(conn, "m", status="pending") == []


def test_never_trained_calling_again_in_the_same_period_records_nothing_more(conn):
    insert_scored_batch(conn, "m", [False] * 50)
    assert len(check(conn)) == 1
    cancel_pending(conn)
    assert check(conn) == []
    assert events(conn, "m", status="pending") == []


def test_a_new_period_fires_again(conn):
    # A short interval, so that the next period comes within the test.
    set_policy(conn, "m", schedule_interval="1 second")
    trained(conn, "m", "1.5 seconds")
    assert len(check(conn)) == 1
    cancel_pending(conn)
    time.sleep(1.1)  # still no successful retrain: the next period
    ids = check(conn)
    assert len(ids) == 1
    assert pending_event(conn, "m")["id"] == ids[0]
    assert len(events(conn, "m")) == 3  # the finished run, the cancelled and the new event


def test_concurrent_checks_record_one_event_per_period(db_url, conn):
    for model in ("a", "b", "c"):
        trained(conn, model, "8 days")
    insert_scored_batch(conn, "d", [False] * 50)  # never trained

    results = run_concurrently(db_url, 8, lambda c, i: check(c))
    returned = sorted(i for ids in results for i in ids)
    rows = events(conn, status="pending")
    assert sorted(e["model_name"] for e in rows) == ["a", "b", "c", "d"]
    assert returned == sorted(e["id"] for e in rows)  # each returned by one caller only
    for event in rows:
        assert event["reasons"] == ["schedule"]
        assert event["details"]["schedule"]["count"] == 1
    assert check(conn) == []


def test_schedule_merged_into_a_pending_event_counts_as_the_periods(conn):
    trained(conn, "m", "8 days")
    insert_metric(conn, "m", accuracy=0.5)
    pending = pending_event(conn, "m")
    assert pending["reasons"] == ["performance"]
    assert check(conn) == [pending["id"]]
    merged = pending_event(conn, "m")
    assert merged["id"] == pending["id"]
    assert merged["reason"] == "performance"
    assert merged["reasons"] == ["performance", "schedule"]
    assert merged["details"]["schedule"]["count"] == 1
    assert check(conn) == []
    assert check(conn) == []
    again = pending_event(conn, "m")
    assert again["details"]["schedule"]["count"] == 1
    assert len(events(conn, "m", status="pending")) == 1


# ---------------------------------------------------------------------------
# Running, off, disabled
# ---------------------------------------------------------------------------


def test_nothing_while_a_retrain_of_the_model_is_running(conn):
    trained(conn, "m", "8 days")
    running = conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status, started_at) "
        "VALUES ('m', 'manual', '{manual}', 'running', now()) RETURNING id"
    ).fetchone()[0]
    insert_scored_batch(conn, "never", [False] * 50)
    conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status) "
        "VALUES ('never', 'manual', '{manual}', 'running')"
    )
    assert check(conn) == []
    assert events(conn, status="pending") == []
    # Once the run is over (failed: the last success is still 8 days ago).
    conn.execute(
        "UPDATE retrain_events SET status = 'failed', finished_at = now() - interval '2 hours' "
        "WHERE id = %s",
        (running,),
    )
    assert len(check(conn)) == 1
    assert pending_event(conn, "m")["reason"] == "schedule"


def test_a_running_retrain_of_another_model_does_not_block(conn):
    trained(conn, "m", "8 days")
    insert_row(conn, "other")
    event = conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons) "
        "VALUES ('other', 'manual', '{manual}') RETURNING id"
    ).fetchone()[0]
    set_status(conn, event, "running")
    assert len(check(conn)) == 1
    assert pending_event(conn, "m") is not None


def test_schedule_interval_null_is_off(conn):
    set_policy(conn, "m", schedule_interval=None)
    set_policy(conn, "never", schedule_interval=None)
    trained(conn, "m", "365 days")
    insert_scored_batch(conn, "never", [False] * 50)
    assert check(conn) == []
    assert events(conn, status="pending") == []


def test_default_schedule_interval_null_turns_schedules_off(conn):
    set_policy(conn, "default", schedule_interval=None)
    trained(conn, "m", "365 days")
    assert check(conn) == []
    assert events(conn, status="pending") == []


def test_disabled_policy_records_no_schedule_event(conn):
    set_policy(conn, "m", enabled=False)
    set_policy(conn, "never", enabled=False)
    trained(conn, "m", "365 days")
    insert_scored_batch(conn, "never", [False] * 50)
    assert check(conn) == []
    assert events(conn, status="pending") == []
    # Enabled again: the schedule is due.
    set_policy(conn, "m", enabled=True)
    assert len(check(conn)) == 1
    assert pending_event(conn, "m")["reason"] == "schedule"


# ---------------------------------------------------------------------------
# A caller with a lock_timeout (the worker) loses only the model it cannot lock
# ---------------------------------------------------------------------------


def test_a_model_whose_lock_is_held_is_skipped_and_the_others_are_recorded(conn, db_url):
    import psycopg

    trained(conn, "a", "8 days")
    trained(conn, "b", "8 days")
    insert_scored_batch(conn, "c", [False] * 50)  # never trained, enough rows
    warnings: list[str] = []
    conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary))
    with psycopg.connect(db_url) as writer:  # a writer of b holds b's lock
        writer.execute("SELECT retrain_lock_model('b')")
        conn.execute("SET lock_timeout = '200ms'")
        ids = check(conn)
        assert sorted(e["model_name"] for e in events(conn, status="pending")) == ["a", "c"]
        assert len(ids) == 2
        assert warnings == ["schedule check: model b skipped, a lock it needs is held"]
    # The lock gone, the next check records b's period.
    later = check(conn)
    assert [e["model_name"] for e in events(conn, status="pending") if e["id"] in later] == ["b"]


def test_a_lock_on_training_data_skips_the_round_and_the_next_one_records_it(conn, db_url):
    # The list of models is read from training_data: while a transaction
    # holds it exclusively (ALTER TABLE, TRUNCATE), a check with a
    # lock_timeout gives up its round; nothing is lost, the next one records.
    import psycopg

    trained(conn, "a", "8 days")
    insert_scored_batch(conn, "c", [False] * 50)
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE training_data IN ACCESS EXCLUSIVE MODE")
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            check(conn)
        assert events(conn, status="pending") == []
    check(conn)
    assert sorted(e["model_name"] for e in events(conn, status="pending")) == ["a", "c"]


# ---------------------------------------------------------------------------
# Growth: the labelled rows since the last retrain number schedule_growth
# times the rows it learned from
# ---------------------------------------------------------------------------


def _retrained_on(conn, model: str, rows: int) -> int:
    """A model whose last retrain (just now) learned from ``rows`` rows,
    through the newest row so far."""
    insert_scored_batch(conn, model, [False] * rows)
    event_id = finish_retrain(conn, model, promoted=True, accuracy=0.9)
    conn.execute("UPDATE retrain_events SET rows_used = %s WHERE id = %s", (rows, event_id))
    return event_id


def _labelled(conn, model: str, n: int) -> None:
    conn.execute("INSERT INTO training_data (model_name, features, label) "
                 "SELECT %s, '{}', 'a' FROM generate_series(1, %s)", (model, n))


def test_a_model_that_grew_seven_fold_is_scheduled_once(conn):
    set_policy(conn, "m", schedule_interval="7 days")
    set_policy(conn, "other", schedule_interval=None)
    _retrained_on(conn, "m", 10)
    _labelled(conn, "m", 69)
    conn.execute("INSERT INTO training_data (model_name, features) "
                 "SELECT 'm', '{}' FROM generate_series(1, 20)")   # unlabelled rows count not
    _labelled(conn, "other", 100)                                  # nor other models' rows
    assert check(conn) == []
    _labelled(conn, "m", 1)
    [event_id] = check(conn)
    event = only_event_pending(conn, "m")
    assert event["id"] == event_id and event["reason"] == "schedule"
    assert event["details"]["schedule"]["first"]["grown_to_rows"] == 70
    _labelled(conn, "m", 100)
    assert check(conn) == []   # one growth event per retrain


def test_growth_is_capped_at_max_training_rows_and_can_be_off(conn):
    set_policy(conn, "m", schedule_interval=None, max_training_rows=30)
    _retrained_on(conn, "m", 10)
    _labelled(conn, "m", 30)
    assert len(check(conn)) == 1      # 30 rows, not 70: a retrain loads no more
    cancel_pending(conn)
    set_policy(conn, "n", schedule_interval=None, schedule_growth=None)
    _retrained_on(conn, "n", 10)
    _labelled(conn, "n", 500)
    assert check(conn) == []


def only_event_pending(conn, model):
    event = pending_event(conn, model)
    assert event is not None
    return event
