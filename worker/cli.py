"""The ``worker`` command.

Every failure a user can cause (bad URL, server down, unknown model, bad
policy value) ends as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import sys

import click
import psycopg

from . import logs
from .db import connect, one_line
from .errors import UserError

DATABASE_URL_HELP = ("PostgreSQL URL, e.g. postgresql://user@host:5432/db (env DATABASE_URL; "
                     "default: an embedded PostgreSQL in ./.pg-retrain).")
TRACKING_URI_HELP = "MLflow tracking URI (env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db)."


def database_option(f):
    return click.option("--database-url", envvar="DATABASE_URL", help=DATABASE_URL_HELP)(f)


def tracking_option(f):
    return click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help=TRACKING_URI_HELP)(f)


def require_url(database_url: str | None) -> str:
    """The database to use: the given URL, else the embedded default (started,
    created and migrated on demand in ./.pg-retrain, or $PG_RETRAIN_HOME)."""
    if database_url:
        return database_url
    from .embedded import default_database_url

    try:
        return default_database_url()
    except Exception as exc:
        raise UserError(f"cannot start the embedded PostgreSQL: {one_line(exc)} "
                        "(or set DATABASE_URL)") from None


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
    worker = _make_worker(database_url, tracking_uri, heartbeat_interval, stale_after,
                          retry_delay, poll_interval=poll_interval,
                          schedule_interval=schedule_interval, drift_interval=drift_interval)
    worker.install_signal_handlers()
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
        event_id = conn.execute(query("request_retrain"), {"model_name": model}).fetchone()[0]
    click.echo(f"event {event_id}: manual retrain of {model} requested")


@cli.command()
@database_option
@click.option("--model", help="Only this model's events.")
@click.option("--limit", default=10, show_default=True, help="How many recent events.")
def status(database_url, model, limit):
    """Models (champion, latest accuracy and drift) and recent events."""
    from .queries import query
    from .status import render_status

    with connect(require_url(database_url), autocommit=True) as conn:
        if model is not None and not conn.execute(
                query("model_known"), {"model_name": model}).fetchone()[0]:
            raise UserError(f"unknown model {model!r}: it has no training data, metrics or policy")
        click.echo(render_status(conn, model, limit))


@cli.group()
def metrics():
    """Metrics tracked in MLflow for a model."""


@metrics.command("list")
@database_option
@tracking_option
@click.option("--model", default="default", show_default=True)
def metrics_list(database_url, tracking_uri, model):
    """Metric names tracked in MLflow for the model.

    --database-url is accepted like everywhere; the metrics come from MLflow."""
    from .tracking import Tracker

    for name in Tracker(tracking_uri).metric_names(model):
        click.echo(name)


@metrics.command("get")
@database_option
@tracking_option
@click.argument("name")
@click.option("--model", default="default", show_default=True)
def metrics_get(database_url, tracking_uri, name, model):
    """The latest value of metric NAME, e.g. model_accuracy.

    --database-url is accepted like everywhere; the value comes from MLflow."""
    from .tracking import Tracker

    value = Tracker(tracking_uri).latest_metric(model, name)
    click.echo(f"{value:.6g}")


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


def main() -> None:
    try:
        cli(standalone_mode=False)
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
    except Exception as exc:  # the contract: one line, never a traceback
        click.echo(f"error: {type(exc).__name__}: {one_line(exc)}", err=True)
        sys.exit(1)


def _describe_database_error(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag and diag.message_primary else one_line(exc))
    return message
