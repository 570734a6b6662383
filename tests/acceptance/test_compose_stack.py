"""The compose setup without Docker: the `mlflow` service's own command and
health check, run as they are in docker-compose.yml (only the host names,
ports and paths of the containers replaced), against a real PostgreSQL
database, with a real `worker run-once` retraining through it the way the
`worker` service does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.acceptance.support import insert_labelled, request_retrain
from tests.conftest import _create_database, _drop_database
from tests.unit.test_compose import ROOT, command_of, interpolate

pytestmark = pytest.mark.slow

MODEL = "shop/churn.v2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_service(server_url, tmp_path):
    """The compose `mlflow` service's command, started here; its URL."""
    services = interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))["services"]
    name = f"pgretrain_mlflow_{uuid.uuid4().hex[:10]}"
    backend = make_url(_create_database(server_url, name)).set(drivername="postgresql+psycopg")
    port = free_port()
    replace = {
        "postgresql+psycopg://postgres:postgres@db:5432/mlflow":
            backend.render_as_string(hide_password=False),
        "/mlartifacts": str(tmp_path / "mlartifacts"),
        "5000": str(port),
    }
    command = [replace.get(arg, arg) for arg in command_of(services["mlflow"])]
    command[0] = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # its uvicorn workers stop with it
    health = [arg.replace(":5000/", f":{port}/") for arg in services["mlflow"]["healthcheck"]["test"][1:]]
    health[0] = sys.executable
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(health, capture_output=True).returncode != 0:
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()
            assert time.monotonic() < deadline, "the compose health check never passed"
            time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
        _drop_database(server_url, name)


def get(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_worker_retrains_through_the_compose_tracking_server(conn, mlflow_service,
                                                               run_worker, tmp_path):
    # The workers reach the server as "mlflow:5000"; other Host headers are refused.
    search = f"{mlflow_service}/api/2.0/mlflow/experiments/search?max_results=1"
    assert get(search, "mlflow:5000") == 200
    assert get(search, "attacker.example") == 403

    insert_labelled(conn, MODEL, 150, seed=4)
    event_id = request_retrain(conn, MODEL)
    once = run_worker("run-once", env_overrides={"MLFLOW_TRACKING_URI": mlflow_service})
    assert once.returncode == 0, once.stderr
    assert once.stdout == ""  # no "View run ... at" lines from MLflow
    row = conn.execute("SELECT status, promoted, model_version FROM retrain_events "
                       "WHERE id = %s", (event_id,)).fetchone()
    assert row == ("succeeded", True, "1")

    # Artifacts went through the server into its artifacts directory.
    assert any((tmp_path / "mlartifacts").rglob("MLmodel"))
    value = run_worker("metrics", "get", "model_accuracy", "--model", MODEL,
                       env_overrides={"MLFLOW_TRACKING_URI": mlflow_service})
    assert value.returncode == 0 and 0.5 < float(value.stdout) <= 1.0

    # Served by alias from the tracking server, on a messy row.
    import mlflow
    import pandas as pd

    from worker.tracking import registered_name

    mlflow.set_tracking_uri(mlflow_service)
    served = mlflow.pyfunc.load_model(f"models:/{registered_name(MODEL)}@champion")
    assert list(served.predict(pd.DataFrame([{"x": 1, "colour": "unseen"}]))) == ["yes"]
