"""The lines `worker status` prints and `worker listen`/`run-once` log about
where the database and the MLflow store are: passwords hidden, a relative
SQLite store made absolute (the worker resolves it against its directory)."""

from pathlib import Path

from worker.cli import resolve_tracking_uri, where


def test_passwords_are_hidden_and_sqlite_paths_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert where("set", "postgresql://etl:s3cret@db:5432/pgretrain", None) == [
        "database: postgresql://etl:***@db:5432/pgretrain",
        f"MLflow:   sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    assert where("set", "postgresql://etl@db/x", "http://u:pw@mlflow:5000")[1] == (
        "MLflow:   http://u:***@mlflow:5000")


def test_the_embedded_database_keeps_mlflow_in_its_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PG_RETRAIN_HOME", str(tmp_path))
    assert resolve_tracking_uri(None, None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_tracking_uri(None, "http://mlflow:5000") == "http://mlflow:5000"
    assert resolve_tracking_uri("postgresql://h/db", None) is None  # MLflow's own default
    url = f"postgresql://postgres@/pgretrain?host={tmp_path}/pgdata"
    assert where(None, url, None)[0] == (
        f"database: {url} (embedded, data directory {Path(tmp_path) / 'pgdata'})")
