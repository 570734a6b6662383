"""With no DATABASE_URL, commands use an embedded PostgreSQL kept in the data
home ($PG_RETRAIN_HOME, else the per-user data directory), started (and
migrated) on demand; with no MLflow URI either, the MLflow store lives in the
same home, so that the current directory does not matter."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.acceptance.support import insert_labelled
from worker import embedded

WORKER = [sys.executable, "-c", "from worker.cli import main; main()"]
UNKNOWN = "error: unknown model 'churn': it has no training data, metrics or policy"


@pytest.fixture
def embedded_home(tmp_path):
    home = tmp_path / "home"
    yield home
    embedded.stop(home / "pgdata")


def run(args, cwd, home, tracking_uri: str | None = None, **env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "MLFLOW_TRACKING_URI")}
    env.update(PG_RETRAIN_HOME=str(home), OMP_NUM_THREADS="1", **env_extra)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return subprocess.run([*WORKER, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def test_commands_without_database_url_use_the_embedded_default(tmp_path, embedded_home):
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    unknown = run(["trigger", "churn"], tmp_path, embedded_home, tracking)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == UNKNOWN
    assert (embedded_home / "pgdata" / "PG_VERSION").exists()

    assert run(["policy", "set", "churn", "min_accuracy=0.85"], tmp_path,
               embedded_home).returncode == 0
    triggered = run(["trigger", "churn"], tmp_path, embedded_home)
    assert triggered.returncode == 0, triggered.stderr
    assert "manual retrain of churn requested" in triggered.stdout

    # The server outlives each command: the next one finds the same data.
    status = run(["status"], tmp_path, embedded_home, tracking)
    assert status.returncode == 0, status.stderr
    assert "churn" in status.stdout and "manual" in status.stdout
    # ... and says where things are.
    assert f"(embedded, data directory {embedded_home / 'pgdata'})" in status.stdout
    assert f"MLflow:   {tracking}" in status.stdout

    once = run(["run-once"], tmp_path, embedded_home, tracking)
    assert once.returncode == 1  # the event fails: churn has no rows
    assert "too few labelled rows: 0" in once.stderr
    assert "Traceback" not in once.stderr


def test_the_data_home_holds_the_database_and_the_models_whatever_the_directory(
        tmp_path, embedded_home):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    url = run(["db", "url"], first, embedded_home)
    assert url.returncode == 0, url.stderr
    url = url.stdout.strip()
    socket_dir = embedded_home / "pgdata"
    assert url == f"postgresql://postgres@/pgretrain?host={socket_dir}"
    # The command that started the server says where it is, on one line.
    assert run(["db", "path"], first, embedded_home).stdout.strip() == str(socket_dir)

    # psql takes the URL as it is, and finds the tables there.
    if shutil.which("psql"):
        psql = subprocess.run(["psql", url, "-Atc", "SELECT current_database(), count(*) "
                               "FROM retrain_policies WHERE model_name = 'default'"],
                              capture_output=True, text=True, timeout=30)
        assert psql.stdout.strip() == "pgretrain|1", psql.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE retrain_policies SET schedule_interval = NULL")
        insert_labelled(conn, "churn", 120, seed=3)
        conn.execute("SELECT request_retrain('churn')")

    once = run(["run-once"], first, embedded_home)
    assert once.returncode == 0, once.stderr
    mlflow_db = embedded_home / "mlflow.db"
    assert f"MLflow:   sqlite:///{mlflow_db}" in once.stderr
    assert mlflow_db.exists() and (embedded_home / "mlartifacts").is_dir()
    assert not list(first.iterdir())  # nothing written to the working directory

    # From another directory: the same database and the same models.
    value = run(["metrics", "get", "model_accuracy", "--model", "churn"], second, embedded_home)
    assert value.returncode == 0, value.stderr
    assert 0.5 < float(value.stdout) <= 1.0
    status = run(["status", "--model", "churn"], second, embedded_home)
    assert "succeeded" in status.stdout, status.stdout
    assert f"MLflow:   sqlite:///{mlflow_db}" in status.stdout
    assert not list(second.iterdir())


def test_db_stop_stops_the_server_and_the_next_command_starts_it(tmp_path, embedded_home):
    assert run(["db", "url"], tmp_path, embedded_home).returncode == 0
    pid = embedded.running_pid(embedded_home / "pgdata")
    assert pid is not None

    stopped = run(["db", "stop"], tmp_path, embedded_home)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == (
        f"stopped the embedded PostgreSQL (data directory {embedded_home / 'pgdata'})")
    assert embedded.running_pid(embedded_home / "pgdata") is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    again = run(["db", "stop"], tmp_path, embedded_home)
    assert again.returncode == 0
    assert again.stdout.strip().startswith("the embedded PostgreSQL is not running")

    # Started on demand again, and logged once by the command that started it.
    status = run(["status"], tmp_path, embedded_home)
    assert status.returncode == 0, status.stderr
    started = [line for line in status.stderr.splitlines() if "embedded PostgreSQL:" in line]
    assert len(started) == 1 and str(embedded_home / "pgdata") in started[0]
    later = run(["status"], tmp_path, embedded_home)
    assert "embedded PostgreSQL:" not in later.stderr


def test_db_commands_with_a_database_url(tmp_path, embedded_home, db_url):
    printed = run(["db", "url"], tmp_path, embedded_home, DATABASE_URL=db_url)
    assert printed.returncode == 0 and printed.stdout.strip() == db_url
    for command, what in ((["db", "stop"], "there is no embedded PostgreSQL to stop"),
                          (["db", "path"], "no embedded PostgreSQL is in use")):
        refused = run(command, tmp_path, embedded_home, DATABASE_URL=db_url)
        assert refused.returncode == 2
        assert refused.stderr.strip() == f"error: DATABASE_URL is set: {what}"
    assert not embedded_home.exists()  # nothing embedded was started


def test_a_data_home_with_a_space_is_refused_in_one_line(tmp_path):
    home = tmp_path / "my home"
    result = run(["status"], tmp_path, home)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot start the embedded PostgreSQL: the data directory {home}/pgdata "
        "contains whitespace, which pgserver cannot handle; set PG_RETRAIN_HOME to a path "
        "without spaces (or set DATABASE_URL)")


def test_the_default_data_home_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv("PG_RETRAIN_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # platformdirs on Linux
    if sys.platform.startswith("linux"):
        assert embedded.home() == tmp_path / "data" / "pg-retrain"
    assert embedded.home() != Path(".pg-retrain").resolve()
    assert embedded.tracking_uri() == f"sqlite:///{embedded.home() / 'mlflow.db'}"

    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "Application Support"))
    if sys.platform.startswith("linux"):
        assert embedded.home() == tmp_path / "user" / ".pg-retrain"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PG_RETRAIN_HOME", "relative")
    assert embedded.home() == tmp_path / "relative"
