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
                   promoted=None, finished_ago: str = "0 seconds") -> int:
    """Record a finished retrain of a model the way the worker does: an event
    that runs, then finishes (so triggers on the status change fire)."""
    event_id = conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status, started_at) "
        "VALUES (%s, 'manual', '{manual}', 'running', now()) RETURNING id",
        (model,),
    ).fetchone()[0]
    conn.execute(
        "UPDATE retrain_events SET status = %s, finished_at = now() - %s::interval, "
        "accuracy = %s, promoted = %s WHERE id = %s",
        (status, finished_ago, accuracy, promoted, event_id),
    )
    return event_id
