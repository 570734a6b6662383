"""With no DATABASE_URL, commands use an embedded PostgreSQL kept in a local
data directory, started (and migrated) on demand."""

import os
import subprocess
import sys

import pytest

from worker import embedded

WORKER = [sys.executable, "-c", "from worker.cli import main; main()"]


@pytest.fixture
def embedded_home(tmp_path):
    home = tmp_path / "home"
    yield home
    embedded.stop(home / "pgdata")


def run(args, cwd, home):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PG_RETRAIN_HOME=str(home), MLFLOW_TRACKING_URI=f"sqlite:///{cwd}/mlflow.db")
    return subprocess.run([*WORKER, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


def test_commands_without_database_url_use_the_embedded_default(tmp_path, embedded_home):
    unknown = run(["trigger", "churn"], tmp_path, embedded_home)
    assert unknown.returncode != 0
    assert unknown.stderr.strip().splitlines()[-1] == (
        'error: unknown model "churn": it has no training data, metrics or policy')
    assert (embedded_home / "pgdata" / "PG_VERSION").exists()

    assert run(["policy", "set", "churn", "min_accuracy=0.85"], tmp_path,
               embedded_home).returncode == 0
    triggered = run(["trigger", "churn"], tmp_path, embedded_home)
    assert triggered.returncode == 0, triggered.stderr
    assert "manual retrain of churn requested" in triggered.stdout

    # The server outlives each command: the next one finds the same data.
    status = run(["status"], tmp_path, embedded_home)
    assert status.returncode == 0, status.stderr
    assert "churn" in status.stdout and "manual" in status.stdout

    once = run(["run-once"], tmp_path, embedded_home)
    assert once.returncode == 1  # the event fails: churn has no rows
    assert "too few labelled rows: 0" in once.stderr
    assert "Traceback" not in once.stderr
