"""Claiming events safely, heartbeating them, and closing them.

Claims use ``FOR UPDATE SKIP LOCKED`` (sql/queries.sql: claim_event), so any
number of workers on any number of machines run each event once. A running
event carries a heartbeat; one whose heartbeat goes stale (its worker died)
is claimed again by another worker. Every closing statement is conditional on
``worker_id`` and ``status = 'running'``: a worker that lost its event to a
takeover cannot overwrite the new owner's outcome.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from .db import connect, one_line
from .queries import query

log = logging.getLogger(__name__)


@dataclass
class Event:
    id: int
    model_name: str
    reason: str
    reasons: list[str]
    attempts: int
    created_at: datetime
    started_at: datetime
    max_attempts: int


class LostEvent(Exception):
    """The event is no longer ours (taken over after a stale heartbeat)."""


def claim(conn: psycopg.Connection, worker_id: str, stale_after: timedelta) -> Event | None:
    try:
        with conn.transaction():
            row = conn.execute(
                query("claim_event"), {"worker_id": worker_id, "stale_after": stale_after}
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        # Another worker claimed an event of the same model at this very
        # moment (retrain_events_one_running_per_model): nothing for us now.
        return None
    return Event(*row) if row else None


def next_run_after(conn: psycopg.Connection) -> datetime | None:
    return conn.execute(query("next_run_after")).fetchone()[0]


class Heartbeat:
    """Keeps ``heartbeat_at`` fresh from a thread with its own connection,
    while the main thread trains. ``lost`` is set when the event was taken
    over (or the database is unreachable long enough for that to happen).

    The worker calls ``finishing()`` just before it records the outcome: a
    beat that lands after that commit finds the event no longer running, and
    that is the worker's own doing, not a takeover (a real takeover makes
    the outcome's conditional write fail, LostEvent)."""

    def __init__(self, database_url: str, event: Event, worker_id: str, interval: float):
        self._url = database_url
        self._event = event
        self._worker_id = worker_id
        self._interval = interval
        self._stop = threading.Event()
        self._finishing = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{event.id}", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def finishing(self) -> None:
        self._finishing.set()

    def _run(self):
        conn = None
        while not self._stop.wait(self._interval):
            try:
                if conn is None or conn.closed:
                    conn = connect(self._url, autocommit=True)
                if not beat(conn, self._event, self._worker_id):
                    if not self._finishing.is_set():
                        log.warning("event %s was taken over by another worker", self._event.id)
                        self.lost.set()
                    return
            except Exception as exc:  # keep beating: the database may come back
                log.warning("heartbeat of event %s failed: %s", self._event.id, one_line(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


def beat(conn: psycopg.Connection, event: Event, worker_id: str) -> bool:
    """Refresh the heartbeat now; False when the event is no longer ours."""
    return conn.execute(query("heartbeat"), {"id": event.id, "worker_id": worker_id}).rowcount == 1


def finish_succeeded(conn: psycopg.Connection, event: Event, worker_id: str, outcome: dict) -> None:
    """Write the outcome, the retrain's metrics row and the new drift
    baseline in one transaction."""
    outcome = dict(outcome)
    baseline = outcome.pop("baseline", [])
    baseline_rows = outcome.pop("baseline_rows", 0)
    with conn.transaction():
        updated = conn.execute(
            query("finish_succeeded"), {"id": event.id, "worker_id": worker_id, **outcome}
        ).rowcount
        if updated == 0:
            raise LostEvent(f"event {event.id} is no longer ours")
        conn.execute(query("insert_retrain_metric"), {
            "model_name": event.model_name,
            "model_version": outcome["model_version"],
            "accuracy": outcome["accuracy"],
        })
        if baseline:
            conn.execute(query("store_drift_baseline"), {
                "model_name": event.model_name,
                "model_version": outcome["model_version"],
                "event_id": event.id,
                "baseline_rows": baseline_rows,
                "after_row_id": outcome["trained_through_id"],
                "features": Jsonb([asdict(f) for f in baseline]),
            })


def finish_failed(conn: psycopg.Connection, event: Event, worker_id: str, error: str,
                  mlflow_run_id: str | None = None) -> None:
    with conn.transaction():
        conn.execute(query("finish_failed"), {
            "id": event.id, "worker_id": worker_id, "error": error,
            "mlflow_run_id": mlflow_run_id,
        })


def release(conn: psycopg.Connection, event: Event, worker_id: str, *, error: str | None,
            delay: timedelta, count_attempt: bool) -> str:
    """Put a running event back in the queue (after an error that may pass, or
    on shutdown). If the model already has a newer pending event, merge into
    it instead, so that there is still at most one pending event per model.
    Returns what happened, for the log."""
    params = {"id": event.id, "worker_id": worker_id, "model_name": event.model_name}
    with conn.transaction():
        # As the triggers do before touching the pending event: no trigger
        # can record one between our look and our write.
        conn.execute(query("lock_model"), params)
        other = conn.execute(query("pending_event_of_model"), params).fetchone()
        if other:
            conn.execute(query("merge_into_pending"), {
                **params, "pending_id": other[0], "error": error or "handed back",
                "delay": delay, "uncount": 0 if count_attempt else 1,
            })
            return f"merged into pending event {other[0]}"
        conn.execute(query("release_for_retry"), {
            **params, "error": error, "delay": delay, "uncount": 0 if count_attempt else 1,
        })
        return f"back to pending, due in {delay.total_seconds():.0f}s"
