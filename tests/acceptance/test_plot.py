"""`worker plot MODEL`: a PNG of the model's history, drawn from model_metrics
and retrain_events, by a real `worker` process on a real database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import set_policy
from worker.plot import default_file_name, draw, gather_history

pytestmark = pytest.mark.slow

MODEL = "plotted"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

METRICS = [  # (minutes after T0, source, accuracy, drift_score, model_version)
    (0, "retrain", 0.93, None, "1"),
    (10, "external", 0.91, None, None),
    (20, "monitor", 0.88, 0.05, "1"),
    (30, "monitor", 0.84, 0.31, "1"),
    (40, "external", None, 0.40, None),
    (50, "retrain", 0.90, None, "2"),
]
EVENTS = [  # (minutes after T0, reason, reasons, status, promoted, version, error)
    (1, "manual", ["manual"], "succeeded", True, "1", None),
    (35, "drift_and_accuracy", ["drift_and_accuracy", "accuracy_drop"], "failed", None, None,
     "too few labelled rows: 3"),
    (51, "drift", ["drift"], "succeeded", True, "2", None),
    (55, "performance", ["performance"], "succeeded", False, "3", None),
]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def history_rows(conn):
    """A model with a known history, written straight into the tables. Its
    policy is disabled so that these rows record no events of their own."""
    set_policy(conn, MODEL, enabled=False)
    for minutes, source, accuracy, drift, version in METRICS:
        conn.execute(
            "INSERT INTO model_metrics (model_name, model_version, accuracy, drift_score, "
            "source, recorded_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (MODEL, version, accuracy, drift, source, at(minutes)))
    for minutes, reason, reasons, status, promoted, version, error in EVENTS:
        conn.execute(
            "INSERT INTO retrain_events (model_name, reason, reasons, status, created_at, "
            "run_after, started_at, finished_at, attempts, promoted, model_version, error, "
            "accuracy) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s)",
            (MODEL, reason, reasons, status, at(minutes - 1), at(minutes - 1), at(minutes - 1),
             at(minutes), promoted, version, error, 0.9 if status == "succeeded" else None))
    # Neither a pending event nor another model's rows belong in the plot.
    conn.execute("INSERT INTO retrain_events (model_name, reason, reasons, status) "
                 "VALUES (%s, 'manual', '{manual}', 'pending')", (MODEL,))
    set_policy(conn, "other", enabled=False)
    conn.execute("INSERT INTO model_metrics (model_name, accuracy, source) "
                 "VALUES ('other', 0.5, 'external')")


def test_history_is_what_the_tables_hold(conn, history_rows):
    history = gather_history(conn, MODEL)

    assert [(m["recorded_at"], m["source"], m["accuracy"], m["drift_score"], m["model_version"])
            for m in history.metrics] == [
        (at(minutes), source, accuracy, drift, version)
        for minutes, source, accuracy, drift, version in METRICS]
    assert [(e["finished_at"], e["reason"], e["reasons"], e["status"], e["promoted"],
             e["model_version"], e["error"]) for e in history.retrains] == [
        (at(minutes), reason, reasons, status, promoted, version, error)
        for minutes, reason, reasons, status, promoted, version, error in EVENTS]


def test_the_figure_marks_each_retrain_by_its_outcome(conn, history_rows):
    fig = draw(gather_history(conn, MODEL))
    accuracy_ax, _ = fig.axes
    texts = [t.get_text() for t in accuracy_ax.texts]
    assert texts == ["manual", "drift_and_accuracy,accuracy_drop", "drift", "performance"]
    legend = [t.get_text() for t in accuracy_ax.get_legend().get_texts()]
    assert legend == ["external", "monitor", "retrain", "retrain: promoted",
                      "retrain: champion kept", "retrain: failed"]


def assert_png(path, min_bytes=10_000):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (700, 1100)
    assert image.std() > 0.01  # something was drawn, not a blank canvas


def test_worker_plot_writes_a_png_named_after_the_model(history_rows, run_worker, tmp_path):
    result = run_worker("plot", MODEL)
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"{MODEL}-history.png"
    assert result.stdout.strip() == f"wrote {MODEL}-history.png"
    assert_png(path)


def test_a_model_without_metrics_gets_a_png_that_says_so(conn, run_worker, tmp_path):
    set_policy(conn, "a/../new", enabled=False)
    fig = draw(gather_history(conn, "a/../new"))
    assert "no metrics recorded yet for model a/../new" in [
        t.get_text() for t in fig.axes[0].texts]

    # Any model name gives one file name in the current directory.
    assert default_file_name("a/../new") == "a~2F~2E~2E~2Fnew-history.png"
    result = run_worker("plot", "a/../new")
    assert result.returncode == 0, result.stderr
    assert_png(tmp_path / "a~2F~2E~2E~2Fnew-history.png", min_bytes=5_000)

    out = tmp_path / "plots" / "new.png"
    out.parent.mkdir()
    result = run_worker("plot", "a/../new", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert_png(out, min_bytes=5_000)


def test_plot_errors_are_one_line(conn, run_worker, tmp_path):
    unknown = run_worker("plot", "no_such_model")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        "error: unknown model 'no_such_model': it has no training data, metrics or policy")
    assert not list(tmp_path.glob("*.png"))

    set_policy(conn, MODEL, enabled=False)
    unwritable = run_worker("plot", MODEL, "--output", str(tmp_path / "missing" / "x.png"))
    assert unwritable.returncode == 2
    assert unwritable.stderr.strip().startswith(f"error: cannot write {tmp_path}/missing/x.png")
