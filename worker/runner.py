"""The worker loop: wait for notifications, run due events, check schedules,
survive lost connections and stop cleanly on SIGTERM/SIGINT.

A notification is only a wake-up call: on start, after every reconnect, on
every wake-up and at least every ``poll_interval`` the worker runs whatever
is due in the table.

A signal (worker/signals.py) stops a wait at once and hands a training
event back to the queue; anything else finishes its step first, so nothing
is cut in the middle. The database is the record of which version is the
champion: MLflow's ``champion`` alias is moved after the outcome commits,
and set again from the database before each retrain and on start.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from . import claiming, signals
from .claiming import Event, Heartbeat, LostEvent
from .db import connect, one_line
from .errors import UserError, is_expected
from .queries import query
from .retrain import retrain
from .tracking import Tracker
from .training import TrainingError

log = logging.getLogger(__name__)

CHANNEL = "retrain_events"


class HandBack(BaseException):
    """Raised by the signal handler while an event trains: hand it back."""


class _StopWaiting(BaseException):
    """Raised by the signal handler while the worker waits."""




@dataclass
class Settings:
    database_url: str
    tracking_uri: str | None = None
    heartbeat_interval: float = 5.0
    stale_after: float = 30.0
    poll_interval: float = 5.0
    schedule_interval: float = 60.0
    drift_interval: float = 1.0
    retry_delay: float = 10.0
    worker_id: str = f"{socket.gethostname()}:{os.getpid()}"


def _log_warning(diag: psycopg.errors.Diagnostic) -> None:
    if diag.severity_nonlocalized == "WARNING":
        log.warning("%s", diag.message_primary)


class Worker:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.tracker = Tracker(settings.tracking_uri)
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self._conn: psycopg.Connection | None = None

    # -- connections ---------------------------------------------------------

    def _work_conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.settings.database_url, autocommit=True)
            # The SQL's own warnings (a model whose drift report failed).
            self._conn.add_notice_handler(_log_warning)
        return self._conn

    def _close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a connection interrupted mid-query
                pass
            self._conn = None

    @property
    def stopping(self) -> bool:
        return signals.stop_requested() is not None

    # -- running events ------------------------------------------------------

    def check_schedules(self) -> None:
        """Record the schedule events that are due, waiting at most 2 s for a
        lock: a model whose lock or rows are held (a writer of its wrong
        predictions, a lock on training_data) is skipped this round, with a
        warning from the SQL, instead of holding up the events that are due."""
        conn = self._work_conn()
        try:
            with conn.transaction():
                conn.execute(query("schedule_check_lock_timeout"))
                ids = [r[0] for r in conn.execute(query("check_schedules")).fetchall()]
        except psycopg.errors.LockNotAvailable:
            # A lock the check needs for every model (it reads retrain_models,
            # retrain_events and retrain_policies).
            log.warning("schedule check skipped: a table it reads is locked (waited 2 s); "
                        "no schedule event recorded until the next check")
            return
        if ids:
            log.info("schedule: recorded events %s", ", ".join(map(str, ids)))

    def refresh_drift(self) -> None:
        """Bring the drift monitor up to date. Its 'monitor' metrics rows fire
        the checks, so a pending event of a model merges what the monitor saw
        before the model's retrain starts (and its baseline moves). A model
        whose refresh fails does not stop the others: the SQL reports it as a
        warning, logged here, and tries again next time. While training_data
        is locked exclusively (an ALTER TABLE, a TRUNCATE), the round is
        skipped rather than holding up the claims behind it."""
        conn = self._work_conn()
        try:
            with conn.transaction():
                conn.execute(query("refresh_lock_timeout"))
                rows = conn.execute(query("refresh_drift")).fetchall()
        except psycopg.errors.LockNotAvailable:
            log.debug("drift refresh skipped: training_data is locked")
            return
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection: reconnect
        except psycopg.Error as exc:
            log.error("drift monitor refresh failed: %s", one_line(exc))
            return
        for model, window_rows, score, accuracy, reported in rows:
            if reported:
                log.info("drift monitor: model %s, %d recent rows, drift %.3f, accuracy %s",
                         model, window_rows, score if score is not None else float("nan"),
                         f"{accuracy:.4f}" if accuracy is not None else "-")

    def drain(self) -> None:
        """Run due events until none is left (or the worker is stopping)."""
        stale = timedelta(seconds=self.settings.stale_after)
        while not self.stopping:
            self.refresh_drift()
            event = claiming.claim(self._work_conn(), self.settings.worker_id, stale)
            if event is None:
                return
            if self.stopping:  # the stop arrived during the claim
                self._hand_back(event)
                return
            self.process(event)

    def process(self, event: Event) -> None:
        latency_ms = (event.started_at - event.created_at).total_seconds() * 1000
        log.info("event %s claimed: model %s, reasons %s, attempt %d/%d (%.0f ms after it was recorded)",
                 event.id, event.model_name, ",".join(event.reasons), event.attempts,
                 event.max_attempts, latency_ms)
        if event.attempts > event.max_attempts:
            self._abandon_earlier_runs(event)
            self._fail(event, f"gave up after {event.max_attempts} attempts "
                              "(its workers stopped heartbeating)")
            return
        outcome = None
        try:
            with Heartbeat(self.settings.database_url, event, self.settings.worker_id,
                           self.settings.heartbeat_interval) as heartbeat:
                # Training and recording may be cut by a signal (the event
                # goes back to the queue); writing to MLflow, inside, is not.
                with signals.raising(HandBack):
                    self.tracker.run_tags = {
                        "pg_retrain.event_id": str(event.id),
                        "pg_retrain.attempt": str(event.attempts),
                        "pg_retrain.worker_id": self.settings.worker_id,
                    }
                    self.reconcile_champion(event.model_name)
                    if event.attempts > 1:
                        self._abandon_earlier_runs(event)
                    outcome = retrain(self._work_conn(), self.tracker, event,
                                      still_ours=lambda: self._check_ours(event, heartbeat))
                    if heartbeat.lost.is_set():
                        raise LostEvent(f"event {event.id} was taken over while it trained")
                    heartbeat.finishing()
                    claiming.finish_succeeded(self._work_conn(), event,
                                              self.settings.worker_id, outcome)
            self.succeeded += 1
            log.info("event %s succeeded", event.id)
        except HandBack:
            self._hand_back(event, outcome)
            return
        except TrainingError as exc:
            self._fail(event, str(exc))
            return
        except LostEvent as exc:
            log.warning("%s; leaving it to its new worker", exc)
            self._abandon_unrecorded(event, outcome)
            return
        except Exception as exc:
            # A run written but not recorded (the outcome's commit failed):
            # once the event is back in the queue, the run is marked. Should
            # the database be gone, the event stays running, and the attempt
            # that takes it over marks it (_abandon_earlier_runs).
            self._retry_or_fail(event, exc)
            self._abandon_unrecorded(event, outcome)
            return
        if outcome["promoted"]:
            self._move_champion(event.model_name, outcome["model_version"])
        attention = self._needs_attention(event.model_name)
        if attention:
            log.warning("model %s needs attention: %s", event.model_name, attention)

    # -- the champion: the database decides, MLflow's alias follows ----------

    def reconcile_champion(self, model_name: str) -> None:
        """Set MLflow's ``champion`` alias to the database's champion (the
        model's latest promoted, succeeded event), should it differ: the
        worker that recorded a promotion may have died before it moved the
        alias. Runs a dead worker left open in MLflow are ended as KILLED."""
        version = self._champion_version(model_name)
        moved = self.tracker.reconcile(model_name, version)
        if moved:
            log.warning("model %s: %s", model_name, moved)
        self._settle_champion(model_name, version)

    def _champion_version(self, model_name: str) -> str | None:
        row = self._work_conn().execute(query("champion_version"),
                                        {"model_name": model_name}).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def _settle_champion(self, model_name: str, version: str | None) -> None:
        """The alias was just put on ``version``, the champion as this worker
        knew it. Another worker may have recorded a newer promotion meanwhile
        and moved the alias before this move landed (a move waits for the
        SQLite store's lock behind other workers' runs, or for a tracking
        server): read the database's champion again and follow it until the
        two agree. Whichever worker moves the alias last then leaves it on
        the champion the database recorded last."""
        for _ in range(10):
            latest = self._champion_version(model_name)
            if latest == (str(version) if version is not None else None):
                return
            moved = self.tracker.align_champion(model_name, latest)
            if moved:
                log.warning("model %s: %s (a newer promotion was recorded meanwhile)",
                            model_name, moved)
            version = latest

    def reconcile_all(self) -> None:
        for (model_name,) in self._work_conn().execute(query("models_with_champion")).fetchall():
            try:
                self.reconcile_champion(model_name)
            except Exception as exc:  # MLflow unreachable: the next retrain tries again
                log.warning("model %s: could not check the champion alias in MLflow: %s",
                            model_name, one_line(exc))

    def _move_champion(self, model_name: str, version: str) -> None:
        with signals.deferred():
            try:
                self.tracker.set_champion(model_name, version)
            except Exception as exc:
                log.warning("model %s: version %s is the champion, but the alias could not be "
                            "moved (%s); it is set before the model's next retrain",
                            model_name, version, one_line(exc))
                return
            try:
                self._settle_champion(model_name, version)
            except Exception as exc:
                log.warning("model %s: the alias is on version %s, but whether a newer "
                            "promotion was recorded meanwhile could not be checked (%s); it is "
                            "checked before the model's next retrain", model_name, version,
                            one_line(exc))

    def _needs_attention(self, model_name: str) -> str | None:
        row = self._work_conn().execute(query("needs_attention"),
                                        {"model_name": model_name}).fetchone()
        return row[0] if row else None

    def _check_ours(self, event: Event, heartbeat: Heartbeat) -> None:
        """Before anything leaves a trace (MLflow), make sure no other worker
        took the event over while this one was stalled."""
        if heartbeat.lost.is_set() or not claiming.beat(
                self._work_conn(), event, self.settings.worker_id):
            raise LostEvent(f"event {event.id} was taken over while it trained")

    def _fail(self, event: Event, error: str) -> None:
        self.failed += 1
        log.error("event %s failed: %s", event.id, error)
        claiming.finish_failed(self._work_conn(), event, self.settings.worker_id, error)

    def _retry_or_fail(self, event: Event, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {one_line(exc)}"
        if not is_expected(exc):
            # A bug of ours, or of a library: the traceback goes to the log;
            # the event keeps a readable line.
            log.error("event %s: unexpected error", event.id, exc_info=exc)
        if event.attempts >= event.max_attempts:
            self._fail(event, f"{error} (after {event.attempts} attempts)")
            return
        delay = timedelta(seconds=self.settings.retry_delay * 2 ** (event.attempts - 1))
        try:
            what = claiming.release(self._work_conn(), event, self.settings.worker_id,
                                    error=error, delay=delay, count_attempt=True)
        except psycopg.Error:
            # The database itself is gone: the event stays running, its
            # heartbeat goes stale and it is taken over later.
            raise
        self.retried += 1
        log.warning("event %s attempt %d failed: %s; %s", event.id, event.attempts, error, what)

    def _hand_back(self, event: Event, outcome: dict | None = None) -> None:
        # The signal may have interrupted a query on the work connection,
        # leaving it unusable: cancel it (a server process waiting for a lock
        # would not notice a closed connection) and hand back on a fresh one.
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.cancel_safe(timeout=5)
            except Exception:  # the connection is broken anyway
                pass
        self._close()
        try:
            conn = self._work_conn()
            # Handing back locks the model as the triggers do; a writer may
            # hold it for long. Rather than wait on shutdown, leave the event
            # to be taken over once its heartbeat goes stale.
            conn.execute("SET lock_timeout = '10s'")
            what = claiming.release(conn, event, self.settings.worker_id,
                                    error=None, delay=timedelta(0), count_attempt=False)
            log.info("event %s handed back on shutdown: %s", event.id, what)
        except psycopg.Error as exc:
            log.warning("could not hand back event %s (%s); it will be taken over "
                        "when its heartbeat goes stale", event.id, one_line(exc))
        # Written to MLflow, not recorded: the next attempt makes its own run.
        self._abandon_unrecorded(event, outcome)

    def _abandon_unrecorded(self, event: Event, outcome: dict | None) -> None:
        """Tag pg_retrain.abandoned the run this attempt wrote, if it did and
        the event does not record it (the outcome's commit failed, the event
        was taken over, a signal came): the next attempt writes its own, and
        no run is left that nothing accounts for. When the database cannot
        say (it is gone), the event is still running as this worker left it,
        and the attempt that takes it over tags the run."""
        if outcome is None:
            return
        run_id = outcome["mlflow_run_id"]
        try:
            row = self._work_conn().execute(
                query("recorded_run"), {"id": event.id}).fetchone()
        except (psycopg.Error, UserError) as exc:
            log.warning("event %s: could not tell whether MLflow run %s was recorded (%s); "
                        "the event's next attempt marks it abandoned", event.id, run_id,
                        one_line(exc))
            return
        if row is not None and row[0] == run_id:
            return  # recorded after all: the commit's reply was what got lost
        with signals.deferred():
            try:
                self.tracker.mark_abandoned(run_id)
            except Exception as exc:
                log.warning("could not mark MLflow run %s abandoned: %s", run_id, one_line(exc))
                return
        log.info("event %s: MLflow run %s marked abandoned (its outcome was not recorded)",
                 event.id, run_id)

    def _abandon_earlier_runs(self, event: Event) -> None:
        """An event claimed again (a retry, a takeover): runs its earlier
        attempts wrote are not recorded (it is not succeeded). A worker killed
        or cut off between writing its run and committing the outcome left
        them unmarked: tag them abandoned."""
        with signals.deferred():
            try:
                tagged = self.tracker.abandon_runs_of(event.model_name, event.id)
            except Exception as exc:  # MLflow unreachable: the retrain fails on it anyway
                log.warning("event %s: could not look for runs of earlier attempts: %s",
                            event.id, one_line(exc))
                return
        for run_id in tagged:
            log.warning("event %s: MLflow run %s of an earlier attempt marked abandoned "
                        "(its outcome was never recorded)", event.id, run_id)

    # -- modes ---------------------------------------------------------------

    def run_once(self) -> int:
        """Check schedules, run every due event, return the exit status."""
        try:
            self.reconcile_all()
            self.check_schedules()
            self.refresh_drift()
            self.drain()
        finally:
            self._close()
        log.info("run-once: %d succeeded, %d failed, %d to be retried",
                 self.succeeded, self.failed, self.retried)
        # A cron job should hear about an attempt that failed even when the
        # event will be retried later.
        return 1 if self.failed or self.retried else 0

    def listen(self) -> int:
        backoff = 1.0
        reconciled = False
        while not self.stopping:
            listener = None
            try:
                listener = connect(self.settings.database_url, autocommit=True)
                listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                log.info("listening on channel %s as %s", CHANNEL, self.settings.worker_id)
                backoff = 1.0
                if not reconciled:
                    self.reconcile_all()
                    reconciled = True
                self._serve(listener)
            except _StopWaiting:
                break
            except (psycopg.OperationalError, psycopg.InterfaceError, UserError) as exc:
                if self.stopping:
                    break
                log.warning("database connection lost (%s); reconnecting in %.0fs",
                            one_line(exc), backoff)
                backoff = self._pause(backoff)
            except psycopg.Error as exc:
                # Not the connection: a statement failed (a schedule check, a
                # race lost). The process must not die; try again shortly.
                if self.stopping:
                    break
                log.error("database error (%s); carrying on in %.0fs", one_line(exc), backoff)
                backoff = self._pause(backoff)
            except Exception:
                # A bug: its traceback goes to the log, and the worker goes on.
                if self.stopping:
                    break
                log.exception("unexpected error; carrying on in %.0fs", backoff)
                backoff = self._pause(backoff)
            finally:
                if listener is not None:
                    listener.close()
        self._close()
        log.info("stopped: %d succeeded, %d failed", self.succeeded, self.failed)
        return 0

    def _pause(self, backoff: float) -> float:
        self._close()
        try:
            with signals.raising(_StopWaiting):
                time.sleep(backoff)
        except _StopWaiting:
            pass
        return min(backoff * 2, 30.0)

    def _serve(self, listener: psycopg.Connection) -> None:
        next_schedule = 0.0
        while not self.stopping:
            if time.monotonic() >= next_schedule:
                self.check_schedules()
                next_schedule = time.monotonic() + self.settings.schedule_interval
            self.drain()  # refreshes the drift monitor first
            if self.stopping:
                return
            # Waking at least every drift_interval keeps drift detected within
            # about that long of a commit while no event is due.
            timeout = min(self.settings.poll_interval,
                          self.settings.drift_interval,
                          max(0.0, next_schedule - time.monotonic()),
                          self._seconds_until_next_deferred())
            with signals.raising(_StopWaiting):
                for _ in listener.notifies(timeout=max(timeout, 0.05), stop_after=1):
                    pass

    def _seconds_until_next_deferred(self) -> float:
        due = claiming.next_run_after(self._work_conn())
        if due is None:
            return float("inf")
        return max(0.0, (due - datetime.now(timezone.utc)).total_seconds() + 0.01)
