"""`worker demo`: the real command, as a subprocess, small, on the test's
throwaway database and MLflow store (tmp_path)."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import events

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCHES, SIZE = 8, 300
SMALL = ("--batches", str(BATCHES), "--batch-size", str(SIZE))


def test_the_demo_streams_retrains_and_says_where_things_are(run_worker, conn, tmp_path,
                                                              mlflow_client):
    started = time.monotonic()
    result = run_worker("--log-format", "json", "demo", *SMALL, timeout=120)
    took = time.monotonic() - started

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    # --log-format json: stderr holds JSON lines only, whatever the demo prints.
    for line in result.stderr.splitlines():
        assert isinstance(json.loads(line), dict), line
    # What it showed on the way, and the summary.
    assert f"batch {BATCHES}/{BATCHES}" in out
    assert "fired:" in out and "retrain (event" in out
    for heading in ("Summary", "stable", "concept change", "input shift", "Where things are"):
        assert heading in out, heading
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert 'psql "$DATABASE_URL"' in out

    png = tmp_path / "demo-history.png"
    assert f"plot:     {png}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000

    # The tables hold what an ETL job and the worker wrote.
    rows = conn.execute(
        "SELECT count(*), count(label), count(prediction) FROM training_data "
        "WHERE model_name = 'demo'").fetchone()
    assert rows[0] == rows[1] == BATCHES * SIZE
    assert rows[2] >= (BATCHES - 1) * SIZE  # every batch after the first model was served
    recorded = events(conn, "demo")
    triggered = [e for e in recorded if e["status"] == "succeeded"
                 and e["reason"] not in ("manual", "schedule")]
    assert triggered, [(e["id"], e["reasons"], e["status"]) for e in recorded]
    assert any(e["promoted"] for e in triggered)
    sources = {s for (s,) in conn.execute(
        "SELECT DISTINCT source FROM model_metrics WHERE model_name = 'demo'").fetchall()}
    assert {"monitor", "retrain"} <= sources
    # The product's defaults but for the demo's waits.
    policy = conn.execute("SELECT cooldown, min_accuracy, error_rate_threshold, schedule_interval "
                          "FROM retrain_policies WHERE model_name = 'demo'").fetchone()
    assert (policy[0].total_seconds(), policy[1], policy[2], policy[3].days) == (0, 0.8, 0.1, 7)
    assert mlflow_client.get_model_version_by_alias("demo", "champion") is not None
    assert took < 60, took

    # A second run says in one line that the model has data, and how to reset.
    again = run_worker("demo", *SMALL, timeout=60)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0, again.stderr
    assert "already has" in again.stderr and "--reset" in again.stderr
    assert conn.execute("SELECT count(*) FROM training_data WHERE model_name = 'demo'"
                        ).fetchone()[0] == BATCHES * SIZE

    # --reset starts over: the database and MLflow hold only the new run.
    old_events = {e["id"] for e in recorded}
    fresh = run_worker("demo", "--reset", "--batches", "3", "--batch-size", "100", timeout=120)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "reset: removed model demo's" in fresh.stdout
    assert conn.execute("SELECT count(*) FROM training_data WHERE model_name = 'demo'"
                        ).fetchone()[0] == 300
    assert not old_events & {e["id"] for e in events(conn, "demo")}
    versions = mlflow_client.search_model_versions("name = 'demo'")
    assert sorted(int(v.version) for v in versions)[0] == 1
    assert len(mlflow_client.get_experiment_by_name("demo").name) == len("demo")


def test_a_bad_database_url_is_one_line(run_worker):
    result = run_worker("demo", "--database-url", "mysql://nope", *SMALL, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: bad database URL")
    assert result.stderr.strip().count("\n") == 0 and not result.stdout


def test_reset_leaves_a_model_the_demo_did_not_make_alone(run_worker, conn):
    conn.execute("INSERT INTO training_data (model_name, features, label) "
                 "VALUES ('churn', '{\"tenure\": 3}', 'yes')")
    result = run_worker("demo", "--model", "churn", "--reset", *SMALL, timeout=60)
    assert result.returncode == 2
    assert "did not write" in result.stderr and result.stderr.strip().count("\n") == 0
    assert conn.execute("SELECT count(*) FROM training_data WHERE model_name = 'churn'"
                        ).fetchone()[0] == 1
