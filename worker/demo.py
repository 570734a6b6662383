"""``worker demo``: the whole system at work on a drifting stream, in about a
minute, on the embedded default (or any database and MLflow store).

Per batch of the stream (worker/demo_data.py), as an ETL job and its
serving model would:

1. the rows are INSERTed with the champion's predictions in ``prediction``
   and no label (before the first model exists, prediction NULL); the
   champion is served as users load it, ``mlflow.pyfunc.load_model(
   "models:/<registered name>@champion")``, reloaded only when the alias
   moves;
2. their labels arrive later, in one UPDATE (the triggers decide there);
3. the real worker runs once, in this process: the schedule check, the
   drift monitor (whose ``monitor`` rows fire the metric checks), and every
   due event.

What fired (from each new or extended ``retrain_events`` row's ``reasons``
and ``details``) and each retrain's outcome are printed as they happen; at
the end a summary per phase, the history plot (worker/plot.py) and where
the database and the MLflow store are.

The demo model gets its own policy row: the default's thresholds, with
shorter waits (see DEMO_POLICY), said in the output. A model without a
policy row of its own gets one with the product's defaults (not a copy of
the ``default`` row, which a user may have changed); one with its own row
(an earlier run, ``worker policy set``) keeps it, but for the waits.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import demo_data
from .db import connect
from .errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "demo"
DEFAULT_BATCHES = 40
DEFAULT_BATCH_SIZE = 1000
#: --fast: fewer, smaller batches (about half the time).
FAST_BATCHES = 20
FAST_BATCH_SIZE = 400

#: The demo model's policy: the default row's values, except the waits. In
#: a run of a minute a batch stands for hours of ETL: an hour's cooldown
#: after the first retrain would hold every later one back until the run is
#: over. The futile-retrain backoff is shortened, not removed: it is what
#: stops a condition that keeps firing on the same rows from retraining
#: again and again when the challenger never wins (with a cooldown of 0
#: nothing else does).
DEMO_POLICY = {"cooldown": "0", "futile_backoff": "15 seconds"}
WHY_POLICY = "a batch here stands for hours of ETL"

#: The demo's features: --reset removes only a model whose rows have them.
DEMO_FEATURES = frozenset({"price", "wait_days", "rating", "channel", "member"})
#: Set on the model's MLflow experiment, so that --reset deletes only an
#: experiment the demo ran.
DEMO_TAG = "pg_retrain.demo"

#: pg-retrain's tables that hold rows of a model, children before parents.
MODEL_TABLES = ("drift_bins", "drift_features", "drift_baselines", "drift_label_changes",
                "retrain_schedule_periods", "retrain_events", "model_metrics",
                "training_data")

INSERT_SQL = """
INSERT INTO training_data (model_name, features, prediction)
SELECT %(model)s, u.features, u.prediction
FROM unnest(%(features)s::jsonb[], %(predictions)s::text[]) WITH ORDINALITY
     AS u(features, prediction, n)
ORDER BY u.n
RETURNING id
"""

LABEL_SQL = """
UPDATE training_data AS t SET label = u.label
FROM unnest(%(ids)s::bigint[], %(labels)s::text[]) AS u(id, label)
WHERE t.id = u.id
"""

EVENTS_SQL = """
SELECT id, reason, reasons, details, status, run_after, run_after <= now() AS due,
       attempts, error, accuracy, champion_accuracy, promoted, model_version,
       rows_used, holdout_rows, training_window
FROM retrain_events
WHERE model_name = %(model)s
ORDER BY id
"""


@dataclass
class Options:
    model: str = DEFAULT_MODEL
    batches: int = DEFAULT_BATCHES
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 7
    reset: bool = False
    plot_path: Path | None = None
    #: Show the worker's own INFO log lines (else only its warnings).
    worker_logs: bool = False


@dataclass
class Retrain:
    batch: int
    event_id: int
    reason: str
    reasons: list[str]
    status: str
    promoted: bool | None
    accuracy: float | None
    champion_accuracy: float | None
    version: str | None
    error: str | None


@dataclass
class BatchResult:
    number: int
    phase: demo_data.Phase
    accuracy: float | None      # the served model's, against the labels
    version: str | None         # the champion version that predicted


@dataclass
class Seen:
    counts: dict[str, int] = field(default_factory=dict)
    status: str = "pending"
    deferred_said: bool = False


def run(database_url: str | None, tracking_uri: str | None, options: Options) -> int:
    """The demo, start to end; the exit status."""
    from .cli import require_url, resolve_tracking_uri

    url = require_url(database_url)
    connect(url).close()  # a clear error for a bad URL or a server that is down
    return Demo(database_url, url, resolve_tracking_uri(database_url, tracking_uri),
                options).run()


class Demo:
    def __init__(self, given_url: str | None, url: str, tracking_uri: str | None,
                 options: Options):
        from rich.console import Console

        self.given_url = given_url
        self.url = url
        self.tracking_uri = tracking_uri
        self.o = options
        # Not a terminal (a file, a pipe): wide enough for the summary table.
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal:
            self.console = Console(highlight=False, soft_wrap=True, width=120)
        self.phases = demo_data.phases(options.batches)
        self.results: list[BatchResult] = []
        self.retrains: list[Retrain] = []
        self.fired: Counter = Counter()
        self.seen: dict[int, Seen] = {}
        self.served = None
        self.served_version: str | None = None
        self.worker = None
        self.stopped_at: int | None = None

    # -- the run -------------------------------------------------------------

    def run(self) -> int:
        from .runner import Settings, Worker
        from .tracking import registered_name

        o = self.o
        self.worker = Worker(Settings(database_url=self.url, tracking_uri=self.tracking_uri))
        self.tracker = self.worker.tracker
        self.registered = registered_name(o.model)
        with connect(self.url, autocommit=True) as conn:
            self.conn = conn
            self.prepare()
            started = time.monotonic()
            self.say(f"[bold]pg-retrain demo[/]: model [bold]{_e(o.model)}[/], {o.batches} "
                     f"batches of {o.batch_size} rows (seed {o.seed})")
            self.say_policy()
            self.say("each batch: INSERT the rows with the champion's predictions, UPDATE "
                     "their labels, run the worker once\n")
            self.catch_signals()
            self.stream()
            self.elapsed = time.monotonic() - started
            self.summary()
        return 130 if self.stopped_at is not None else 0

    def catch_signals(self) -> None:
        """Ctrl-C or SIGTERM stops the run after the batch (an event in
        training is handed back, as `worker listen` does), with the summary
        of what was done."""
        install = getattr(self.worker, "install_signal_handlers", None)
        if install is not None:
            install()
            return
        try:
            from . import signals
        except ImportError:
            return
        signals.install()

    def prepare(self) -> None:
        """Refuse a model that has data already (or reset it), then set the
        demo policy."""
        existing = self.existing()
        if existing and not self.o.reset:
            raise UserError(f"model {self.o.model!r} already has {existing}; run `worker demo "
                            "--reset` to start over, or choose another --model")
        if self.o.reset:
            self.reset()
        self.set_policy()
        self.make_experiment()

    def set_policy(self) -> None:
        """The product's defaults (a new row takes the columns' defaults),
        with the demo's waits; remembers what differs from the defaults."""
        from psycopg import sql

        from .policies import set_policy

        model = self.o.model
        self.conn.execute("INSERT INTO retrain_policies (model_name) VALUES (%s) "
                          "ON CONFLICT (model_name) DO NOTHING", (model,))
        set_policy(self.conn, model, DEMO_POLICY)
        with self.conn.cursor(row_factory=dict_row) as cur:
            own = cur.execute("SELECT * FROM retrain_policies WHERE model_name = %s",
                              (model,)).fetchone()
            # The columns' defaults: a row inserted and rolled back.
            with self.conn.transaction(force_rollback=True):
                defaults = cur.execute(
                    sql.SQL("INSERT INTO retrain_policies (model_name) VALUES (%s) "
                            "RETURNING *"), (f"pg-retrain demo defaults {uuid.uuid4()}",)).fetchone()
        self.policy = own
        self.policy_changes = {k: (own[k], defaults[k]) for k in own
                               if k not in ("model_name", "updated_at")
                               and own[k] != defaults[k]}

    def existing(self) -> str | None:
        """What the model has already (database rows, MLflow runs), or None."""
        row = self.conn.execute(
            "SELECT (SELECT count(*) FROM training_data WHERE model_name = %(m)s), "
            "(SELECT count(*) FROM retrain_events WHERE model_name = %(m)s), "
            "(SELECT count(*) FROM model_metrics WHERE model_name = %(m)s)",
            {"m": self.o.model}).fetchone()
        if any(row):
            return (f"{row[0]} rows, {row[1]} retrain events and {row[2]} metrics rows "
                    "in this database")
        if self.experiment() is not None or self.registered_model_exists():
            return f"an experiment or registered model in the MLflow store {self.tracker.uri}"
        return None

    def experiment(self):
        with self.tracker.lock():
            return self.tracker.client.get_experiment_by_name(self.o.model)

    def registered_model_exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            with self.tracker.lock():
                self.tracker.client.get_registered_model(self.registered)
            return True
        except MlflowException:
            return False

    def reset(self) -> None:
        """Remove everything of the model: its rows, metrics, events, schedule
        periods and drift baseline, and its MLflow experiment and registered
        model. Only a model the demo made: a model whose rows are not the
        demo's, or an experiment without the demo's tag, is refused."""
        from psycopg import sql

        model = self.o.model
        self._refuse_foreign_model()
        experiment = self.experiment()
        if experiment is not None and experiment.tags.get(DEMO_TAG) != "true":
            raise UserError(f"the MLflow experiment {model!r} in {self.tracker.uri} was not "
                            "made by the demo; --reset leaves it alone (delete it in MLflow, "
                            "or choose another --model)")
        with self.conn.transaction():
            self.conn.execute("SELECT retrain_lock_model(%s)", (model,))
            running = self.conn.execute(
                "SELECT id FROM retrain_events WHERE model_name = %s AND status = 'running'",
                (model,)).fetchone()
            if running:
                raise UserError(f"a worker is retraining model {model!r} (event {running[0]}); "
                                "wait for it to finish, then reset")
            removed = Counter()
            for name in MODEL_TABLES:
                if self.conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                    continue
                removed[name] = self.conn.execute(
                    sql.SQL("DELETE FROM {} WHERE model_name = %s").format(
                        sql.Identifier(name)), (model,)).rowcount
        self.reset_mlflow(experiment)
        self.say(f"reset: removed model {_e(model)}'s {removed['training_data']} rows, "
                 f"{removed['retrain_events']} events, {removed['model_metrics']} metrics rows, "
                 "its drift baseline and schedule periods"
                 + (", and its MLflow experiment and registered model"
                    if experiment is not None else ""))

    def _refuse_foreign_model(self) -> None:
        model = self.o.model
        ends = self.conn.execute(
            "(SELECT features FROM training_data WHERE model_name = %(m)s ORDER BY id LIMIT 1) "
            "UNION ALL "
            "(SELECT features FROM training_data WHERE model_name = %(m)s ORDER BY id DESC "
            "LIMIT 1)", {"m": model}).fetchall()
        foreign = any(set(f) != DEMO_FEATURES for (f,) in ends)
        if not ends:
            # No rows: a model measured by someone's job, or only a policy.
            foreign = bool(self.conn.execute(
                "SELECT EXISTS (SELECT FROM model_metrics WHERE model_name = %(m)s "
                "AND source = 'external')", {"m": model}).fetchone()[0])
        if foreign:
            raise UserError(f"model {model!r} has data that the demo did not write; --reset "
                            "removes only a demo model's data (choose another --model)")

    def reset_mlflow(self, experiment) -> None:
        from mlflow.exceptions import MlflowException

        client = self.tracker.client
        with self.tracker.lock():
            try:
                client.delete_registered_model(self.registered)
            except MlflowException:
                pass  # none
            if experiment is None:
                return
            # Deleting keeps the name taken (MLflow only marks it deleted):
            # renamed first, so the next run's retrain can create it anew.
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            client.rename_experiment(experiment.experiment_id,
                                     f"{self.o.model} (demo reset {stamp})")
            client.delete_experiment(experiment.experiment_id)
        location = experiment.artifact_location or ""
        if location.startswith("file://") and self.tracker._sqlite is not None:
            path = Path(unquote(urlparse(location).path))
            if self.tracker._sqlite.parent / "mlartifacts" in path.parents:
                shutil.rmtree(path, ignore_errors=True)

    def stream(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.progress import TimeElapsedColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.console, transient=True,
                            disable=not self.console.is_terminal)
        restore = self._route_logs_through(progress) if not progress.disable else None
        quiet = self._quiet_worker_logs()
        try:
            with progress:
                self.progress = progress
                task = progress.add_task("starting", total=self.o.batches)
                phase = None
                for batch in demo_data.stream(self.o.batches, self.o.batch_size, self.o.seed):
                    if batch.phase != phase:
                        phase = batch.phase
                        self.say_phase(phase)
                    self.step(batch, lambda text: progress.update(
                        task, description=f"batch {batch.number}: {text}"))
                    progress.advance(task)
                    if self.worker.stopping:
                        self.stopped_at = batch.number
                        self.say(f"[yellow]stopped after batch {batch.number}[/]")
                        break
        finally:
            quiet()
            if restore:
                restore()

    def step(self, batch: demo_data.Batch, status) -> None:
        status("predicting")
        self.load_champion()
        predictions = None
        if self.served is not None:
            import pandas as pd

            frame = pd.DataFrame.from_records(batch.features)
            predictions = [str(p) for p in self.served.predict(frame)]
        status("inserting rows")
        ids = [r[0] for r in self.conn.execute(INSERT_SQL, {
            "model": self.o.model, "features": [Jsonb(f) for f in batch.features],
            "predictions": predictions or [None] * len(batch.features)}).fetchall()]
        status("labels arrive")
        self.conn.execute(LABEL_SQL, {"ids": ids, "labels": batch.labels})

        accuracy = (float(np.mean([p == y for p, y in zip(predictions, batch.labels)]))
                    if predictions else None)
        result = BatchResult(batch.number, batch.phase, accuracy,
                             self.served_version if predictions else None)
        self.results.append(result)
        self.say_batch(result)
        self.look(batch.number)  # what the labels fired
        status("worker run-once")
        self.worker.run_once()
        self.look(batch.number)  # what the monitor and the schedule fired, and the outcomes

    def load_champion(self) -> None:
        """The champion as users serve it, reloaded when the alias moved."""
        import mlflow
        from mlflow.exceptions import MlflowException

        from .tracking import CHAMPION

        try:
            with self.tracker.lock():
                version = self.tracker.client.get_model_version_by_alias(
                    self.registered, CHAMPION).version
        except MlflowException:
            return
        if version != self.served_version:
            self.served = mlflow.pyfunc.load_model(f"models:/{self.registered}@{CHAMPION}")
            self.served_version = version

    # -- what happened -------------------------------------------------------

    def look(self, batch: int) -> None:
        """Report what fired since the last look and the retrains that ended."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            events = cur.execute(EVENTS_SQL, {"model": self.o.model}).fetchall()
        for event in events:
            seen = self.seen.setdefault(event["id"], Seen())
            details = event["details"] or {}
            for reason in event["reasons"]:
                count = int((details.get(reason) or {}).get("count", 1))
                new = count - seen.counts.get(reason, 0)
                if new > 0:
                    seen.counts[reason] = count
                    self.fired[reason] += new
                    self.say_fired(event, reason, details.get(reason) or {}, new)
            if event["status"] != seen.status:
                seen.status = event["status"]
                if event["status"] in ("succeeded", "failed"):
                    self.record_retrain(batch, event)
            if (event["status"] == "pending" and not event["due"] and not seen.deferred_said):
                seen.deferred_said = True
                self.say_waiting(event)

    def say_waiting(self, event: dict) -> None:
        """A pending event that is not due: until when, and why."""
        until = f"      [yellow]event {event['id']} waits until {event['run_after']:%H:%M:%S}[/]"
        if event["error"]:
            self.say(f"{until} to be tried again after: {_e(event['error'])}")
            return
        attention = self.conn.execute(
            "SELECT needs_attention FROM model_status WHERE model_name = %s",
            (self.o.model,)).fetchone()
        if attention and attention[0]:
            self.say(f"{until}: [yellow]the model needs attention[/]: {_e(attention[0])}")
        else:
            self.say(f"{until} (cooldown)")

    def record_retrain(self, batch: int, e: dict) -> None:
        retrain = Retrain(batch, e["id"], e["reason"], list(e["reasons"]), e["status"],
                          e["promoted"], e["accuracy"], e["champion_accuracy"],
                          e["model_version"], e["error"])
        self.retrains.append(retrain)
        why = ", ".join(retrain.reasons)
        if retrain.status == "failed":
            self.say(f"      [red]retrain failed[/] (event {e['id']}: {why}): {_e(e['error'])}")
            return
        against = ("no champion yet" if retrain.champion_accuracy is None else
                   f"champion {retrain.champion_accuracy:.3f} on the same holdout")
        verdict = ("[green]promoted[/]" if retrain.promoted else
                   "[dim]not promoted: the champion stays[/]")
        rows = f", registered after learning from {e['rows_used']} rows" if e["rows_used"] else ""
        self.say(f"      [bold]retrain[/] (event {e['id']}: {why}) → version {e['model_version']}:"
                 f" holdout accuracy {retrain.accuracy:.3f}, {against}: {verdict}{rows}")

    def make_experiment(self) -> None:
        """The model's MLflow experiment, made as the worker would make it,
        tagged as the demo's: --reset deletes only such an experiment."""
        experiment_id = self.tracker.experiment_id(self.o.model)
        with self.tracker.lock():
            self.tracker.client.set_experiment_tag(experiment_id, DEMO_TAG, "true")

    # -- output --------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.print(text)

    def say_policy(self) -> None:
        ours = [k for k in self.policy_changes if k in DEMO_POLICY]
        theirs = [k for k in self.policy_changes if k not in DEMO_POLICY]
        show = lambda k: (f"{k} {_setting(self.policy_changes[k][0])} "  # noqa: E731
                          f"(default {_setting(self.policy_changes[k][1])})")
        text = "policy: the product's defaults"
        if ours:
            text += f", but {', '.join(show(k) for k in ours)}: {WHY_POLICY}"
        self.say(text)
        if theirs:
            self.say(f"[yellow]        and from model {_e(self.o.model)}'s own policy row, set "
                     f"before this run: {', '.join(show(k) for k in theirs)}[/] "
                     f"(worker policy show {_shell(self.o.model)})")

    def say_phase(self, phase: demo_data.Phase) -> None:
        number = self.phases.index(phase) + 1
        self.say(f"[bold cyan]── phase {number}/{len(self.phases)}: {phase.name}[/] "
                 f"(batches {phase.first_batch}–{phase.last_batch}): {phase.description}")

    def say_batch(self, r: BatchResult) -> None:
        if r.accuracy is None:
            served = "no champion yet: prediction NULL"
        else:
            served = f"served version {r.version}: accuracy {r.accuracy:.3f}"
        self.say(f"batch {r.number:>{len(str(self.o.batches))}}/{self.o.batches}  {served}")

    def say_fired(self, event: dict, reason: str, details: dict, new: int) -> None:
        latest = details.get("latest", details)
        times = f" ×{new}" if new > 1 else ""
        self.say(f"      [yellow]{reason} fired{times}[/]: {describe(reason, latest)} "
                 f"(event {event['id']})")

    def summary(self) -> None:
        from rich import box
        from rich.table import Table

        from . import plot
        from .cli import where

        self.say("")
        table = Table(title="[bold]Summary[/]", title_justify="left", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False)
        table.add_column("phase", no_wrap=True)
        table.add_column("batches", no_wrap=True)
        table.add_column("served accuracy\nfirst batch → last 3", no_wrap=True)
        table.add_column("retrains (by first reason)")
        table.add_column("promoted", no_wrap=True)
        for phase in self.phases:
            done = [r for r in self.results if r.phase == phase]
            if not done:
                continue
            scored = [r.accuracy for r in done if r.accuracy is not None]
            served = (f"{scored[0]:.3f} → {np.mean(scored[-3:]):.3f}" if scored else "-")
            retrains = [t for t in self.retrains
                        if phase.first_batch <= t.batch <= phase.last_batch]
            by_reason = Counter(t.reason for t in retrains)
            table.add_row(phase.name, f"{done[0].number}–{done[-1].number}", served,
                          ", ".join(f"{k} {v}" for k, v in by_reason.items()) or "-",
                          f"{sum(1 for t in retrains if t.promoted)} of {len(retrains)}")
        self.console.print(table)

        served = [r for r in self.results if r.accuracy is not None]
        if served:
            self.say(f"served accuracy, batches {served[0].number}–{served[-1].number}: "
                     f"{np.mean([r.accuracy for r in served]):.3f} (10% of the labels are "
                     "noise: about 0.90 is the best any model can do)")
        else:
            self.say("no batch was served by a model")
        succeeded = [t for t in self.retrains if t.status == "succeeded"]
        self.say("conditions fired: " + (", ".join(f"{k} {v}" for k, v in self.fired.items())
                                          or "none"))
        self.say(f"retrains: {len(self.retrains)} ({sum(1 for t in succeeded if t.promoted)} "
                 f"promoted, {sum(1 for t in succeeded if not t.promoted)} kept the champion, "
                 f"{len(self.retrains) - len(succeeded)} failed); the run took "
                 f"{self.elapsed:.0f} s")

        path = (self.o.plot_path or Path(plot.default_file_name(self.o.model))).resolve()
        plot.render(plot.gather_history(self.conn, self.o.model), path)
        self.say("")
        self.say("[bold]Where things are[/]")
        self.say(f"  plot:     {path}")
        for line in where(self.given_url, self.url, self.tracking_uri):
            self.say(f"  {_e(line)}")
        self.say(f"  open MLflow:   {_e(mlflow_ui_command(self.tracker.uri))}")
        self.say(f"  open psql:     {_e(psql_command(self.given_url))}")
        self.say(f"  then:          SELECT id, reasons, status, accuracy, champion_accuracy, "
                 f"promoted FROM retrain_events WHERE model_name = {_sql_text(self.o.model)};")
        self.say(f"  status:        worker status --model {_shell(self.o.model)}")
        again = "worker demo --reset" + (f" --model {_shell(self.o.model)}"
                                         if self.o.model != DEFAULT_MODEL else "")
        self.say(f"  run it again:  {again}")

    # -- logs ----------------------------------------------------------------

    def _quiet_worker_logs(self):
        """The worker's INFO lines would repeat what the demo says: only its
        warnings, unless asked for (--log-level given)."""
        logger = logging.getLogger("worker")
        level = logger.level
        if not self.o.worker_logs:
            logger.setLevel(max(level, logging.WARNING))
        return lambda: logger.setLevel(level)

    def _route_logs_through(self, progress):
        """While the progress bar is drawn, log lines go above it."""
        handlers = [h for h in logging.getLogger().handlers
                    if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr]

        class ToConsole:
            def write(self, text):
                if text.strip():
                    progress.console.print(text.rstrip("\n"), markup=False, highlight=False)

            def flush(self):
                pass

        for h in handlers:
            h.setStream(ToConsole())
        return lambda: [h.setStream(sys.stderr) for h in handlers]


def describe(reason: str, d: dict) -> str:
    """A condition's observed values against its thresholds, from the
    event's details (SPEC section 2)."""
    f = _number
    if reason == "error_rate":
        parts = []
        if "rolling_error_rate" in d:
            seen, limit = _pair(d["rolling_error_rate"], d.get("rolling_threshold"))
            text = (f"rolling error {seen} over the newest {d.get('window_rows')} labelled "
                    f"rows > {limit}")
            champion = d.get("champion_error")
            if champion is not None and d.get("rolling_threshold") is not None \
                    and d["rolling_threshold"] > champion:
                margin = d["rolling_threshold"] - champion
                text += f" (the champion's holdout error {f(champion)} + margin {f(margin)})"
            else:
                text += " (error_rate_threshold)"
            parts.append(text + _tie(d["rolling_error_rate"], d.get("rolling_threshold")))
        if "error_rate" in d:
            seen, limit = _pair(d["error_rate"], d.get("threshold"))
            parts.append(f"a row's error_rate {seen} > error_rate_threshold {limit}")
        return "; ".join(parts) or str(d)
    if reason == "performance":
        seen, limit = _pair(d.get("accuracy"), d.get("min_accuracy"))
        return f"monitor accuracy {seen} < min_accuracy {limit}"
    if reason == "accuracy_drop":
        if "previous_accuracy" in d:
            return (f"accuracy {f(d.get('accuracy'))}, more than {f(d.get('tolerance'))} below "
                    f"the previous {f(d['previous_accuracy'])}")
        return (f"accuracy {f(d.get('accuracy'))}, more than {f(d.get('tolerance'))} below the "
                f"champion's {f(d.get('champion_accuracy'))}")
    if reason in ("drift_and_accuracy", "drift"):
        drift, drift_limit = _pair(d.get("drift_score"), d.get("drift_threshold"))
        text = f"drift (PSI) {drift} > {drift_limit}"
        if reason == "drift":
            return text
        accuracy, accuracy_limit = _pair(d.get("accuracy"), d.get("combined_max_accuracy"))
        return f"{text} and accuracy {accuracy} < {accuracy_limit}"
    if reason == "schedule":
        if d.get("last_success") is None:
            return "never trained, and it has min_training_rows labelled rows"
        return f"schedule_interval {d.get('schedule_interval')} passed since the last retrain"
    if reason == "manual":
        return f"requested by {d.get('requested_by')}"
    return str(d)


def _setting(value) -> str:
    if isinstance(value, timedelta):
        from .status import duration

        return duration(value) if value else "0"
    return "null" if value is None else str(value)


def _number(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _pair(value, limit) -> tuple[str, str]:
    """A value and its threshold, with as many digits as it takes to tell
    them apart (0.1700 > 0.1699, not 0.170 > 0.170)."""
    if not (isinstance(value, (int, float)) and isinstance(limit, (int, float))):
        return _number(value), _number(limit)
    for digits in range(3, 7):
        a, b = f"{value:.{digits}f}", f"{limit:.{digits}f}"
        if a != b or value == limit:
            return a, b
    return f"{value:.3f}", f"{limit:.3f}"


def _tie(value, limit) -> str:
    """A note for a value that exceeds its threshold only by float
    arithmetic (34/200 against 0.12 + 0.05)."""
    if (isinstance(value, float) and isinstance(limit, float) and value != limit
            and abs(value - limit) < 1e-9):
        return "; equal but for float rounding"
    return ""


def mlflow_ui_command(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    from .cli import _hide_password

    return f"mlflow ui --backend-store-uri {_shell(_hide_password(uri))}"


def psql_command(given_url: str | None) -> str:
    import os

    if not given_url:
        return 'psql "$(worker db url)"'
    if os.environ.get("DATABASE_URL") == given_url:
        return 'psql "$DATABASE_URL"'
    from .cli import _hide_password

    return f"psql {_shell(_hide_password(given_url))}"


def _e(text) -> str:
    from rich.markup import escape

    return escape(str(text))


def _shell(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
