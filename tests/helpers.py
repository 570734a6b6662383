"""Small helpers the database tests share: plain SQL through psycopg."""

from __future__ import annotations

import json

from psycopg import sql
from psycopg.types.json import Jsonb


def events(conn, model: str | None = None, status: str | None = None) -> list[dict]:
    query = "SELECT * FROM retrain_events WHERE true"
    params: list = []
    if model is not None:
        query += " AND model_name = %s"
        params.append(model)
    if status is not None:
        query += " AND status = %s"
        params.append(status)
    cur = conn.cursor(row_factory=_dict_row)
    return cur.execute(query + " ORDER BY id", params).fetchall()


def _dict_row(cursor):
    names = [c.name for c in cursor.description]
    return lambda values: dict(zip(names, values))


def set_policy(conn, model: str, **values) -> None:
    """Create or update a model's policy row."""
    columns = ["model_name", *values]
    conn.execute(
        sql.SQL(
            "INSERT INTO retrain_policies ({cols}) VALUES ({vals}) "
            "ON CONFLICT (model_name) DO UPDATE SET {sets}"
        ).format(
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            vals=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
            sets=sql.SQL(", ").join(
                sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in values
            )
            if values
            else sql.SQL("enabled = retrain_policies.enabled"),
        ),
        [model, *values.values()],
    )


def insert_row(conn, model: str = "m", features=None, label=None, prediction=None,
               error_rate=None) -> int:
    return conn.execute(
        "INSERT INTO training_data (model_name, features, label, prediction, error_rate) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (model, Jsonb(features or {"x": 1.0}), label, prediction, error_rate),
    ).fetchone()[0]


def insert_scored(conn, model: str, outcomes: list[bool]) -> None:
    """Insert labelled rows with predictions; True in outcomes = a wrong prediction."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO training_data (model_name, features, label, prediction) "
            "VALUES (%s, %s, 'a', %s)",
            [(model, Jsonb({"x": i}), "b" if wrong else "a") for i, wrong in enumerate(outcomes)],
        )


def copy_rows(conn, rows) -> None:
    """COPY rows of (model_name, features dict, label, prediction, error_rate)."""
    with conn.cursor() as cur:
        with cur.copy(
            "COPY training_data (model_name, features, label, prediction, error_rate) FROM STDIN"
        ) as copy:
            for model, features, label, prediction, error_rate in rows:
                copy.write_row((model, json.dumps(features), label, prediction, error_rate))


def insert_metric(conn, model: str = "m", accuracy=None, drift_score=None,
                  source: str = "external") -> int:
    return conn.execute(
        "INSERT INTO model_metrics (model_name, accuracy, drift_score, source) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (model, accuracy, drift_score, source),
    ).fetchone()[0]


def finish_retrain(conn, model: str, *, status: str = "succeeded", accuracy=None,
                   promoted=None, finished_ago: str = "0 seconds",
                   trained_through_id: int | None = None) -> int:
    """Record a finished retrain of a model the way the worker does: an event
    that runs, then finishes. ``trained_through_id``: the newest row it
    learned from (default: the newest row of training_data now)."""
    event_id = conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status, started_at) "
        "VALUES (%s, 'manual', '{manual}', 'running', now()) RETURNING id",
        (model,),
    ).fetchone()[0]
    if trained_through_id is None:
        trained_through_id = conn.execute(
            "SELECT coalesce(max(id), 0) FROM training_data").fetchone()[0]
    conn.execute(
        "UPDATE retrain_events SET status = %s, finished_at = clock_timestamp() - %s::interval, "
        "accuracy = %s, promoted = %s, trained_through_id = %s WHERE id = %s",
        (status, finished_ago, accuracy, promoted, trained_through_id, event_id),
    )
    return event_id


# ---------------------------------------------------------------------------
# Added for the trigger tests (section 2 and 3 of SPEC.md)
# ---------------------------------------------------------------------------


def pending_event(conn, model: str) -> dict | None:
    """The model's pending event, or None; fails if there are several."""
    rows = events(conn, model, status="pending")
    assert len(rows) <= 1, f"{len(rows)} pending events for {model!r}"
    return rows[0] if rows else None


def only_event(conn, model: str | None = None) -> dict:
    """The one and only event (of a model): fails if there are none or several."""
    rows = events(conn, model)
    assert len(rows) == 1, f"expected exactly one event, found {rows}"
    return rows[0]


def cancel_pending(conn, model: str | None = None) -> None:
    """Take pending events out of the way (status cancelled), keeping them as audit rows."""
    if model is None:
        conn.execute("UPDATE retrain_events SET status = 'cancelled' WHERE status = 'pending'")
    else:
        conn.execute(
            "UPDATE retrain_events SET status = 'cancelled' "
            "WHERE status = 'pending' AND model_name = %s",
            (model,),
        )


def set_status(conn, event_id: int, status: str) -> None:
    conn.execute(
        "UPDATE retrain_events SET status = %s, "
        "started_at = CASE WHEN %s = 'running' THEN now() ELSE started_at END "
        "WHERE id = %s",
        (status, status, event_id),
    )


def listener(db_url: str, channel: str = "retrain_events"):
    """A new autocommit connection that LISTENs on the channel (caller closes it)."""
    import psycopg

    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return conn


def received(listen_conn, timeout: float = 0.5, stop_after: int | None = None) -> list[dict]:
    """Payloads (parsed JSON) of the retrain_events notifications delivered to a
    listener connection within timeout (or until stop_after arrived)."""
    payloads = []
    for n in listen_conn.notifies(timeout=timeout, stop_after=stop_after):
        assert n.channel == "retrain_events"
        payloads.append(json.loads(n.payload))
    return payloads


def run_concurrently(db_url: str, workers: int, work, timeout: float = 60) -> list:
    """Run work(conn, i) in `workers` threads, each with its own autocommit
    connection, released at once by a barrier. Returns the results; re-raises
    the first exception."""
    import threading

    import psycopg

    barrier = threading.Barrier(workers, timeout=timeout)
    results: list = [None] * workers
    errors: list[BaseException] = []

    def target(i):
        try:
            with psycopg.connect(db_url, autocommit=True) as c:
                barrier.wait()
                results[i] = work(c, i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a worker thread hung (deadlock?)"
    if errors:
        raise errors[0]
    return results


def insert_scored_batch(conn, model: str, outcomes: list[bool]) -> list[int]:
    """Like insert_scored, but as ONE multi-row INSERT statement; returns the ids."""
    values = sql.SQL(", ").join(
        sql.SQL("({}, {}, 'a', {})").format(sql.Placeholder(), sql.Placeholder(), sql.Placeholder())
        for _ in outcomes
    )
    params: list = []
    for i, wrong in enumerate(outcomes):
        params += [model, Jsonb({"x": i}), "b" if wrong else "a"]
    rows = conn.execute(
        sql.SQL(
            "INSERT INTO training_data (model_name, features, label, prediction) "
            "VALUES {} RETURNING id"
        ).format(values),
        params,
    ).fetchall()
    return sorted(r[0] for r in rows)


def wait_until_blocked(conn, timeout: float = 10.0) -> None:
    """Wait until another backend of this database waits on a lock."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        blocked = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        ).fetchone()[0]
        if blocked:
            return
        time.sleep(0.02)
    raise AssertionError("no backend got blocked on a lock")
