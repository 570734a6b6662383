"""MLflow: one experiment per model, one run per retrain, the fitted pipeline
registered as a version of the model's registered model, and the alias
``champion`` on the version the database says is the champion (the worker
moves it after the promotion commits, and sets it again from the database
should a worker have died in between: ``reconcile``).

Several workers may share the default local SQLite store. Creating that
store from two processes at once corrupts it, and SQLite takes one writer at
a time, so for SQLite stores every MLflow write happens under an
inter-process file lock beside the database file.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import warnings
from pathlib import Path
from urllib.parse import quote, urlparse

log = logging.getLogger(__name__)

CHAMPION = "champion"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def _quiet_mlflow():
    # MLflow logs store migrations and emits warnings on every first use;
    # an operator's log should show pg-retrain's lines.
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    from mlflow.utils.logging_utils import disable_logging

    disable_logging()  # "Successfully registered model ..." printed to stderr
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # With a tracking server, MLflow prints "View run ... at: http://..." to
    # stdout after each run; the worker logs its own line on stderr.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    # sqlite:///relative.db has path "/relative.db"; sqlite:////abs.db "//abs.db".
    return Path(urlparse(tracking_uri).path[1:]).resolve()


class Tracker:
    """MLflow access for one tracking URI."""

    def __init__(self, tracking_uri: str | None = None):
        import mlflow

        _quiet_mlflow()

        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
        self._sqlite = sqlite_path(self.uri)
        if self._sqlite is not None:
            self._sqlite.parent.mkdir(parents=True, exist_ok=True)
            self.uri = f"sqlite:///{self._sqlite}"
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self._mlflow = mlflow
        self.client = mlflow.MlflowClient(self.uri, self.uri)
        #: Tags every run of the current retrain gets besides its own: the
        #: worker sets who runs which attempt of which event, so that runs of
        #: one event can be told apart (bench/chaos.py checks that no two
        #: attempts of an event overlap).
        self.run_tags: dict[str, str] = {}
        with self.lock():
            # First use creates the store's tables: serialised by the lock.
            self.client.search_experiments(max_results=1)

    @contextlib.contextmanager
    def lock(self):
        if self._sqlite is None:
            yield
            return
        lock_path = self._sqlite.with_name(self._sqlite.name + ".lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _artifact_location(self, model_name: str) -> str | None:
        # Next to the SQLite file rather than in whatever directory the
        # worker was started from.
        if self._sqlite is None:
            return None
        return (self._sqlite.parent / "mlartifacts" / safe_directory_name(model_name)).as_uri()

    def experiment_id(self, model_name: str) -> str:
        with self.lock():
            experiment = self.client.get_experiment_by_name(model_name)
            if experiment is not None:
                return experiment.experiment_id
            return self.client.create_experiment(
                model_name, artifact_location=self._artifact_location(model_name)
            )

    def load_champion(self, model_name: str):
        """(pipeline, version) of the model's champion, or (None, None)."""
        from mlflow.exceptions import MlflowException

        try:
            with self.lock():
                version = self.client.get_model_version_by_alias(
                    registered_name(model_name), CHAMPION)
        except MlflowException:
            return None, None
        model = self._mlflow.sklearn.load_model(
            f"models:/{registered_name(model_name)}/{version.version}")
        return model, version.version

    def log_retrain(self, *, model_name: str, params: dict, metrics: dict, pipeline,
                    input_example, promoted: bool) -> tuple[str, str]:
        """Log a run with its model and register it; the alias is the caller's
        to move once the promotion is recorded (``set_champion``). Returns
        (run_id, registered version). A signal meanwhile waits for the run
        to be written whole.

        The model is logged without an input schema (``signature=False``),
        with ``input_example`` (raw feature rows) to show its shape. The
        pipeline's first step coerces any frame to the kinds it learned, so it
        is the model's real input contract; a schema inferred from a few rows
        made ``pyfunc`` refuse what ETL really sends (a missing feature), and
        one of optional ``Any`` columns still fails a row without any known
        feature (MLflow drops every column and hands the model zero rows).
        The learned feature kinds are recorded in the model's metadata."""
        import sklearn
        import pandas

        experiment_id = self.experiment_id(model_name)
        requirements = [f"scikit-learn=={sklearn.__version__}", f"pandas=={pandas.__version__}"]
        # The registry prints "Registered model ..."/"Created version ..."
        # straight to stderr, which would break --log-format json.
        from . import signals

        with signals.deferred(), self.lock(), contextlib.redirect_stderr(io.StringIO()):
            with self._mlflow.start_run(experiment_id=experiment_id) as run:
                self._mlflow.log_params({k: _param(v) for k, v in params.items()})
                self._mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
                self._mlflow.set_tags({**self.run_tags,
                                       "pg_retrain.promoted": str(promoted).lower()})
                info = self._mlflow.sklearn.log_model(
                    pipeline,
                    name="model",
                    registered_model_name=registered_name(model_name),
                    signature=False,
                    input_example=input_example,
                    metadata=_feature_metadata(pipeline),
                    pip_requirements=requirements,
                    # skops refuses our own FeatureFrame step and sklearn's
                    # tree internals unless each type is listed; the store is
                    # written only by pg-retrain workers, so cloudpickle.
                    serialization_format="cloudpickle",
                )
            version = str(info.registered_model_version)
        return run.info.run_id, version

    def mark_abandoned(self, run_id: str) -> None:
        """A run whose outcome was never recorded (its worker stopped): the
        event's next attempt makes a run of its own."""
        with self.lock():
            self.client.set_tag(run_id, "pg_retrain.abandoned", "true")

    def set_champion(self, model_name: str, version: str) -> None:
        with self.lock():
            self.client.set_registered_model_alias(registered_name(model_name), CHAMPION, version)

    def reconcile(self, model_name: str, version: str | None) -> str | None:
        """Put the ``champion`` alias on ``version`` (the database's champion;
        None: no alias) if it is elsewhere, and end runs that a worker killed
        while it wrote them left RUNNING (the model has no retrain running
        now: this is called just before one starts). Returns what changed,
        for the log, or None."""
        changes = []
        with self.lock():
            moved = self._align(model_name, version)
            if moved:
                changes.append(moved)
            experiment = self.client.get_experiment_by_name(model_name)
            if experiment is not None:
                for run in self.client.search_runs([experiment.experiment_id],
                                                   filter_string="attributes.status = 'RUNNING'"):
                    self.client.set_terminated(run.info.run_id, status="KILLED")
                    changes.append(f"run {run.info.run_id} (event "
                                   f"{run.data.params.get('event_id', '?')}) ended as KILLED: "
                                   "its worker stopped while writing it")
        return "; ".join(changes) or None

    def align_champion(self, model_name: str, version: str | None) -> str | None:
        """The alias half of ``reconcile``, safe while other workers retrain
        the model: runs are left alone."""
        with self.lock():
            return self._align(model_name, version)

    def _align(self, model_name: str, version: str | None) -> str | None:
        from mlflow.exceptions import MlflowException

        name = registered_name(model_name)
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION).version
        except MlflowException:
            current = None
        if version is not None and str(current) != str(version):
            self.client.set_registered_model_alias(name, CHAMPION, str(version))
            return (f"champion alias moved from version {current} to {version}, "
                    "the champion the database recorded")
        if version is None and current is not None:
            self.client.delete_registered_model_alias(name, CHAMPION)
            return (f"champion alias removed from version {current}: the database "
                    "records no promotion")
        return None

    def abandon_runs_of(self, model_name: str, event_id: int) -> list[str]:
        """Tag pg_retrain.abandoned the FINISHED runs of an event that is not
        succeeded: an earlier attempt wrote them and never recorded them (its
        worker was killed, or lost the database, between writing the run and
        committing the outcome). Called by the attempt that owns the event
        now, before it writes a run of its own. Returns the runs tagged."""
        tagged = []
        with self.lock():
            experiment = self.client.get_experiment_by_name(model_name)
            if experiment is None:
                return tagged
            for run in self.client.search_runs(
                    [experiment.experiment_id],
                    filter_string=f"params.event_id = '{int(event_id)}' "
                                  "and attributes.status = 'FINISHED'"):
                if run.data.tags.get("pg_retrain.abandoned") != "true":
                    self.client.set_tag(run.info.run_id, "pg_retrain.abandoned", "true")
                    tagged.append(run.info.run_id)
        return tagged

    def metric_names(self, model_name: str) -> list[str]:
        """The metric names of the model's runs; none for a model never
        retrained (the caller decides whether the model exists at all)."""
        runs = self._runs(model_name)
        return sorted({key for run in runs for key in run.data.metrics})

    def latest_metric(self, model_name: str, metric: str) -> float | None:
        """The metric's value in the newest run that has it, else None."""
        for run in self._runs(model_name):
            if metric in run.data.metrics:
                return run.data.metrics[metric]
        return None

    def _runs(self, model_name: str):
        with self.lock():
            experiment = self.client.get_experiment_by_name(model_name)
            if experiment is None:
                return []
            return self.client.search_runs(
                [experiment.experiment_id], order_by=["attributes.start_time DESC"],
                max_results=200,
            )


def registered_name(model_name: str) -> str:
    """The model's registered-model name. MLflow refuses '/' and ':' there,
    which model names may contain: they are %-escaped (and '%' itself), so
    distinct models keep distinct names."""
    return model_name.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")


def safe_directory_name(model_name: str) -> str:
    """A model name as one directory name: any text is a valid model name
    ('/etc', '..'), so everything but letters, digits, '-' and '_' is
    escaped as ~XX (its UTF-8 bytes in hex).

    Not %XX: MLflow stores the artifact location as a file URI and decodes it
    once more when it resolves ``models:/NAME@alias``, so a directory named
    'a%2Fb' was looked up as 'a/b' and the model could not be loaded back."""
    escaped = quote(model_name, safe="").replace(".", "%2E").replace("~", "%7E") or "%00"
    return escaped.replace("%", "~")  # no '~' is left unescaped above: still one-to-one


def _feature_metadata(pipeline) -> dict | None:
    """{"feature_kinds": {name: numeric|categorical}} from the pipeline's
    feature step, for people reading the MLmodel file; None if there is none."""
    steps = getattr(pipeline, "named_steps", {})
    kinds = getattr(steps.get("frame"), "kinds_", None) if "frame" in steps else None
    return {"feature_kinds": dict(kinds)} if kinds else None


def _param(value) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:500]
