"""Fixtures for the acceptance tests: real `worker` processes against the
test's real PostgreSQL database and a real MLflow SQLite store in tmp_path.

- ``worker_env``: the environment a worker process runs with
  (DATABASE_URL, MLFLOW_TRACKING_URI=sqlite:///<tmp_path>/mlflow.db).
- ``start_worker(*args)``: starts ``worker listen`` with small timings,
  stderr/stdout to a log file; every process still alive at teardown is
  killed (and the logs are printed, so a failing test shows them).
- ``run_worker(*args)``: runs a worker command to completion.
- ``mlflow_client``: an MlflowClient on the test's tracking store.

By default the test's MLflow store starts as a copy of a store created once
per session (creating one costs ~5 s of MLflow migrations); a test that
wants MLflow to create it from scratch uses ``fresh_mlflow_store``.

Worker processes run with OMP_NUM_THREADS=1 (see ``worker_env``).

Schedules are switched off in the ``default`` policy so that the worker's
schedule check (at start, then every --schedule-interval) records no event
the test did not ask for; each test records its own events.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.acceptance.support import WorkerProcess

WORKER_TIMINGS = (
    "--heartbeat-interval", "0.5",
    "--stale-after", "3",
    "--poll-interval", "1",
    "--retry-delay", "1",
)


def worker_command() -> list[str]:
    script = shutil.which("worker", path=str(Path(sys.executable).parent)) or shutil.which("worker")
    if script:
        return [script]
    return [sys.executable, "-c", "from worker.cli import main; main()"]


@pytest.fixture(scope="session")
def mlflow_template_store():
    """A migrated MLflow SQLite store, created once; tests get a copy."""
    import mlflow

    directory = Path(tempfile.mkdtemp(prefix="pg-retrain-mlflow-"))
    path = directory / "mlflow.db"
    uri = f"sqlite:///{path}"
    mlflow.MlflowClient(uri, uri).search_experiments(max_results=1)
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fresh_mlflow_store():
    """Marker fixture: the test's MLflow store does not exist yet."""
    return True


@pytest.fixture
def tracking_uri(request, tmp_path, mlflow_template_store):
    path = tmp_path / "mlflow.db"
    if "fresh_mlflow_store" not in request.fixturenames:
        shutil.copyfile(mlflow_template_store, path)
    return f"sqlite:///{path}"


@pytest.fixture
def mlflow_client(tracking_uri):
    import mlflow

    return mlflow.MlflowClient(tracking_uri, tracking_uri)


@pytest.fixture(autouse=True)
def _no_schedules(conn):
    conn.execute("UPDATE retrain_policies SET schedule_interval = NULL WHERE model_name = 'default'")


@pytest.fixture
def worker_env(db_url, tracking_uri):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": db_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
    })
    # Several workers train at once on this small host. Unlimited, each
    # HistGradientBoosting fit starts one OpenMP thread per core and two
    # concurrent fits slow down ~15x (spin-waiting threads fight over the
    # cores; reported as a worker finding). One thread per worker keeps the
    # suite's timings meaningful.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def run_worker(worker_env, tmp_path):
    """Runs ``worker *args`` to completion: a CompletedProcess (text)."""

    def environment(overrides: dict | None) -> dict:
        env = dict(worker_env)
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(*args, timeout: float = 120, env_overrides: dict | None = None):
        return subprocess.run([*worker_command(), *args], cwd=tmp_path,
                              env=environment(env_overrides),
                              capture_output=True, text=True, timeout=timeout)

    def many(*commands, timeout: float = 120, env_overrides: dict | None = None):
        """Runs several commands at once; their CompletedProcesses, in order."""
        procs = [subprocess.Popen([*worker_command(), *args], cwd=tmp_path,
                                  env=environment(env_overrides), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for args in commands]
        results = []
        for args, proc in zip(commands, procs):
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
        return results

    run.many = many
    return run


@pytest.fixture
def start_worker(worker_env, tmp_path):
    """Factory: ``start_worker(*extra_args)`` starts ``worker listen`` with
    small timings and returns a WorkerProcess (already listening)."""
    started: list[WorkerProcess] = []

    def start(*args, wait_listening: bool = True, timeout: float = 60) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started) + 1}.log"
        handle = open(log_path, "w")
        proc = subprocess.Popen(
            [*worker_command(), "listen", *WORKER_TIMINGS, *args],
            cwd=tmp_path, env=worker_env, stdout=handle, stderr=subprocess.STDOUT,
        )
        handle.close()
        worker = WorkerProcess(proc, log_path)
        started.append(worker)
        if wait_listening:
            worker.wait_for_log("listening on channel", timeout=timeout)
        return worker

    yield start

    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait(timeout=10)
    for worker in started:
        print(f"----- {worker.log_path.name} (pid {worker.pid}, exit {worker.proc.returncode}) -----")
        print(worker.log())

