"""The ``worker`` command.

Every failure a user can cause (bad URL, server down, unknown model, bad
policy value) ends as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import click
import psycopg

from . import logs
from .db import connect, one_line
from .errors import UserError, unknown_model

log = logging.getLogger(__name__)

DATABASE_URL_HELP = ("PostgreSQL URL, e.g. postgresql://user@host:5432/db (env DATABASE_URL; "
                     "default: an embedded PostgreSQL in the data home, see `worker db path`).")
TRACKING_URI_HELP = ("MLflow tracking URI (env MLFLOW_TRACKING_URI; default: sqlite:///mlflow.db "
                     "in the current directory, or <data home>/mlflow.db with the embedded "
                     "database).")


def database_option(f):
    return click.option("--database-url", envvar="DATABASE_URL", help=DATABASE_URL_HELP)(f)


def tracking_option(f):
    return click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help=TRACKING_URI_HELP)(f)


def require_url(database_url: str | None) -> str:
    """The database to use: the given URL, else the embedded default (started,
    created and migrated on demand in the data home, see embedded.home())."""
    if database_url:
        return database_url
    from .embedded import default_database_url

    try:
        return default_database_url()
    except Exception as exc:
        raise UserError(f"cannot start the embedded PostgreSQL: {one_line(exc)} "
                        "(or set DATABASE_URL)") from None


def resolve_tracking_uri(database_url: str | None, tracking_uri: str | None) -> str | None:
    """The MLflow store: the given URI; else, with the embedded database, the
    SQLite store in the same data home (models stay with the data whatever
    the current directory); else None, MLflow's default sqlite:///mlflow.db."""
    if tracking_uri or database_url:
        return tracking_uri or None
    from . import embedded

    return embedded.tracking_uri()


def where(database_url: str | None, url: str, tracking_uri: str | None) -> list[str]:
    """Lines saying where the database and the MLflow store are (passwords
    hidden, a relative SQLite path made absolute)."""
    from . import embedded
    from .tracking import DEFAULT_TRACKING_URI, sqlite_path

    if database_url:
        database = _hide_password(url)
    else:
        database = f"{url} (embedded, data directory {embedded.data_dir()})"
    tracking = tracking_uri or DEFAULT_TRACKING_URI
    if sqlite_path(tracking) is not None:
        tracking = f"sqlite:///{sqlite_path(tracking)}"
    return [f"database: {database}", f"MLflow:   {_hide_password(tracking)}"]


def _hide_password(uri: str) -> str:
    return re.sub(r"^([a-z0-9+.-]+://[^/:@]*):[^/]*@", r"\1:***@", uri, flags=re.IGNORECASE)


def require_known_model(conn, model: str) -> None:
    """A UserError (exit 2) unless the database knows ``model``."""
    from .queries import query

    if not conn.execute(query("model_known"), {"model_name": model}).fetchone()[0]:
        raise unknown_model(model)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="text", show_default=True,
              type=click.Choice(["text", "json"]), help="json: one JSON object per line.")
def cli(log_level, log_format):
    """pg-retrain: retrain models when PostgreSQL says they need it."""
    logs.setup(log_level, log_format)


@cli.command()
@database_option
def migrate(database_url):
    """Apply the database migrations (alembic upgrade head)."""
    from . import migrate as migrations

    url = require_url(database_url)
    connect(url).close()  # a clear error for a bad URL or a server that is down
    migrations.upgrade(url)
    click.echo("database is at the latest revision")


def _worker_options(f):
    f = click.option("--heartbeat-interval", default=5.0, show_default=True,
                     help="Seconds between heartbeats of a running event.")(f)
    f = click.option("--stale-after", default=30.0, show_default=True,
                     help="Seconds without heartbeat after which a running event is taken over.")(f)
    f = click.option("--retry-delay", default=10.0, show_default=True,
                     help="First retry delay in seconds after an error that may pass (doubles).")(f)
    return f


def _make_worker(database_url, tracking_uri, heartbeat_interval, stale_after, retry_delay,
                 **extra):
    from .runner import Settings, Worker

    url = require_url(database_url)
    connect(url).close()
    tracking_uri = resolve_tracking_uri(database_url, tracking_uri)
    for line in where(database_url, url, tracking_uri):
        log.info("%s", line)
    return Worker(Settings(database_url=url, tracking_uri=tracking_uri,
                           heartbeat_interval=heartbeat_interval, stale_after=stale_after,
                           retry_delay=retry_delay, **extra))


@cli.command()
@database_option
@tracking_option
@_worker_options
@click.option("--poll-interval", default=5.0, show_default=True,
              help="Seconds between table polls when no notification arrives.")
@click.option("--schedule-interval", default=60.0, show_default=True,
              help="Seconds between schedule checks.")
@click.option("--drift-interval", default=1.0, show_default=True,
              help="Seconds between drift monitor refreshes.")
def listen(database_url, tracking_uri, heartbeat_interval, stale_after, retry_delay,
           poll_interval, schedule_interval, drift_interval):
    """Run until SIGINT/SIGTERM: LISTEN, run due events, check schedules."""
    from . import signals

    signals.install()  # already, when started as the `worker` command
    worker = _make_worker(database_url, tracking_uri, heartbeat_interval, stale_after,
                          retry_delay, poll_interval=poll_interval,
                          schedule_interval=schedule_interval, drift_interval=drift_interval)
    if signals.stop_requested():  # during start-up: nothing was claimed yet
        log.info("stopped during start-up")
        sys.exit(0)
    sys.exit(worker.listen())


@cli.command("run-once")
@database_option
@tracking_option
@_worker_options
def run_once(database_url, tracking_uri, heartbeat_interval, stale_after, retry_delay):
    """Check schedules and the drift monitor, run every due event, exit
    (non-zero if one failed)."""
    worker = _make_worker(database_url, tracking_uri, heartbeat_interval, stale_after,
                          retry_delay)
    sys.exit(worker.run_once())


@cli.command()
@database_option
@click.argument("model")
def trigger(database_url, model):
    """Record a manual retrain event for MODEL (skips the cooldown)."""
    from .queries import query

    with connect(require_url(database_url), autocommit=True) as conn:
        # Checked here as well as in request_retrain(), so that the message
        # and the exit status are the same as every other command's.
        require_known_model(conn, model)
        event_id = conn.execute(query("request_retrain"), {"model_name": model}).fetchone()[0]
    click.echo(f"event {event_id}: manual retrain of {model} requested")


@cli.command()
@database_option
@tracking_option
@click.option("--model", help="Only this model's events.")
@click.option("--limit", default=10, show_default=True, help="How many recent events.")
def status(database_url, tracking_uri, model, limit):
    """Models (champion, latest accuracy and drift), recent events, and where
    the database and the MLflow store are."""
    from .status import render_status

    url = require_url(database_url)
    with connect(url, autocommit=True) as conn:
        if model is not None:
            require_known_model(conn, model)
        click.echo(render_status(conn, model, limit))
    click.echo("")
    click.echo("\n".join(where(database_url, url, resolve_tracking_uri(database_url,
                                                                       tracking_uri))))


@cli.group()
def metrics():
    """Metrics tracked in MLflow for a model."""


@metrics.command("list")
@database_option
@tracking_option
@click.option("--model", default="default", show_default=True)
def metrics_list(database_url, tracking_uri, model):
    """Metric names tracked in MLflow for the model (none yet: no output).

    The metrics come from MLflow; the database is asked only whether a model
    without runs exists at all."""
    from .tracking import Tracker

    names = Tracker(resolve_tracking_uri(database_url, tracking_uri)).metric_names(model)
    if not names:
        _require_known_model_at(database_url, model)
    for name in names:
        click.echo(name)


@metrics.command("get")
@database_option
@tracking_option
@click.argument("name")
@click.option("--model", default="default", show_default=True)
def metrics_get(database_url, tracking_uri, name, model):
    """The latest value of metric NAME, e.g. model_accuracy.

    The value comes from MLflow; the database is asked only whether a model
    without runs exists at all."""
    from .tracking import Tracker

    value = Tracker(resolve_tracking_uri(database_url, tracking_uri)).latest_metric(model, name)
    if value is None:
        _require_known_model_at(database_url, model)
        raise UserError(f"no metric {name!r} tracked for model {model!r}")
    click.echo(f"{value:.6g}")


def _require_known_model_at(database_url: str | None, model: str) -> None:
    with connect(require_url(database_url), autocommit=True) as conn:
        require_known_model(conn, model)


@cli.group()
def policy():
    """Read and change a model's retrain policy."""


@policy.command("show")
@database_option
@click.argument("model", default="default")
def policy_show(database_url, model):
    """The policy that applies to MODEL (its own row, else the default)."""
    from .policies import show_policy

    with connect(require_url(database_url), autocommit=True) as conn:
        click.echo(show_policy(conn, model))


@policy.command("set")
@database_option
@click.argument("model")
@click.argument("settings", nargs=-1, required=True)
def policy_set(database_url, model, settings):
    """Set policy values of MODEL: worker policy set MODEL min_accuracy=0.85 cooldown='2 hours'.

    A model without a policy row gets one, starting from the default row.
    """
    from .policies import parse_settings, set_policy, show_policy

    values = parse_settings(settings)
    with connect(require_url(database_url), autocommit=True) as conn:
        set_policy(conn, model, values)
        click.echo(show_policy(conn, model))


@cli.command()
@database_option
@click.argument("model")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG file to write (default: <model>-history.png in the current directory, "
                   "the model name made safe as a file name).")
def plot(database_url, model, output):
    """A PNG of MODEL's history: accuracy and drift over time, and its retrains."""
    from . import plot as plotting

    with connect(require_url(database_url), autocommit=True) as conn:
        require_known_model(conn, model)
        history = plotting.gather_history(conn, model)
    path = output or Path(plotting.default_file_name(model))
    plotting.render(history, path)
    click.echo(f"wrote {path}")


@cli.command()
@database_option
@tracking_option
@click.option("--model", default="demo", show_default=True, help="The demo model's name.")
@click.option("--batches", type=click.IntRange(3, 10000),
              help="Batches to stream (default 40; 20 with --fast).")
@click.option("--batch-size", type=click.IntRange(20, 1000000),
              help="Rows per batch (default 1000; 400 with --fast).")
@click.option("--seed", default=7, show_default=True, help="The data's random seed.")
@click.option("--fast", is_flag=True, help="A shorter run: 20 batches of 400 rows.")
@click.option("--reset", is_flag=True,
              help="Start over: remove the model's rows, metrics, events, drift baseline "
                   "and MLflow runs and models first.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG of the run (default: <model>-history.png in the current directory).")
@click.pass_context
def demo(ctx, database_url, tracking_uri, model, batches, batch_size, seed, fast, reset,
         plot_path):
    """The end-to-end demonstration: stream a drifting data set into
    training_data as ETL would, let the triggers and the worker retrain, and
    show what fired and why (docs/demo.md)."""
    from click.core import ParameterSource

    from . import demo as demonstration

    options = demonstration.Options(
        model=model, seed=seed, reset=reset, plot_path=plot_path,
        batches=batches or (demonstration.FAST_BATCHES if fast else
                            demonstration.DEFAULT_BATCHES),
        batch_size=batch_size or (demonstration.FAST_BATCH_SIZE if fast else
                                  demonstration.DEFAULT_BATCH_SIZE),
        # The worker's own INFO lines only when --log-level was given.
        worker_logs=ctx.find_root().get_parameter_source("log_level")
        is not ParameterSource.DEFAULT)
    sys.exit(demonstration.run(database_url, tracking_uri, options))


@cli.group()
def db():
    """The embedded PostgreSQL (used when DATABASE_URL is not set)."""


@db.command("url")
@database_option
def db_url(database_url):
    """Print the database URL, ready for psql: psql "$(worker db url)".

    Starts the embedded server if it is not running."""
    from .db import libpq_url

    click.echo(libpq_url(database_url) if database_url else require_url(None))


@db.command("path")
@database_option
def db_path(database_url):
    """Print the embedded server's data directory (the data home is its parent).

    With DATABASE_URL set: an error, exit 2."""
    from . import embedded

    _refuse_external(database_url, "no embedded PostgreSQL is in use")
    click.echo(str(embedded.data_dir()))


@db.command("stop")
@database_option
def db_stop(database_url):
    """Stop the embedded server (the next command starts it again).

    Exit 0 whether it was running or not; with DATABASE_URL set there is
    nothing embedded to stop: one line on stderr, exit 2."""
    from . import embedded

    _refuse_external(database_url, "there is no embedded PostgreSQL to stop")
    data = embedded.data_dir()
    if embedded.stop(data):
        click.echo(f"stopped the embedded PostgreSQL (data directory {data})")
    else:
        click.echo(f"the embedded PostgreSQL is not running (data directory {data})")


def _refuse_external(database_url: str | None, what: str) -> None:
    """`db path`/`db stop` manage only the embedded server: with a URL set,
    a UserError (exit 2), so a script sees that nothing was done."""
    if database_url:
        raise UserError(f"DATABASE_URL is set: {what}")


def main() -> None:
    from . import signals
    from .errors import is_expected

    try:
        cli(standalone_mode=False)
    except signals.Stop:
        sys.exit(0)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except psycopg.Error as exc:
        click.echo(f"error: {_describe_database_error(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:
        if not is_expected(exc):
            # A bug of ours (or of a library): the traceback says where.
            import traceback

            traceback.print_exc()
            click.echo(f"error: a bug in pg-retrain: {type(exc).__name__}: {one_line(exc)}",
                       err=True)
        else:
            click.echo(f"error: {type(exc).__name__}: {one_line(exc)}", err=True)
        sys.exit(1)


def _describe_database_error(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag and diag.message_primary else one_line(exc))
    return message
