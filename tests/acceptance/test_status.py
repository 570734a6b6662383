"""`worker status`, run as a user runs it: when each pending event is due
(now, or how long it waits and why), and a line for a model that needs
attention, saying why."""

from __future__ import annotations

import re

import pytest

from tests.helpers import insert_metric, insert_row, set_policy

pytestmark = pytest.mark.slow


def finished_event(conn, model, *, reasons=("error_rate",), promoted=True, minutes_ago=0,
                   version="1"):
    conn.execute(
        "INSERT INTO retrain_events (model_name, reason, reasons, status, started_at, "
        "finished_at, attempts, promoted, accuracy, model_version) "
        "VALUES (%s, %s, %s, 'succeeded', now() - %s * interval '1 minute', "
        "now() - %s * interval '1 minute', 1, %s, 0.9, %s)",
        (model, reasons[0], list(reasons), minutes_ago, minutes_ago, promoted, version))


def line_of(text: str, start: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(start)]
    assert lines, text
    return lines[0]


def test_status_shows_when_pending_events_run_and_who_needs_attention(conn, run_worker):
    # Within the cooldown after a retrain: waits for it.
    set_policy(conn, "cooling", cooldown="1 hour")
    finished_event(conn, "cooling", reasons=("manual",))
    insert_metric(conn, "cooling", accuracy=0.5)          # performance fires
    # Nothing holds it back: due now.
    insert_row(conn, "ready")
    conn.execute("SELECT request_retrain('ready')")
    # Three automatic retrains in a row kept the champion: backed off.
    set_policy(conn, "stuck", cooldown="0", futile_backoff="2 hours")
    finished_event(conn, "stuck", promoted=True, minutes_ago=10)
    for minutes in (3, 2, 1):
        finished_event(conn, "stuck", promoted=False, minutes_ago=minutes)
    insert_metric(conn, "stuck", accuracy=0.5)
    # A retry after an error that may pass.
    set_policy(conn, "flaky")
    conn.execute("INSERT INTO retrain_events (model_name, reason, reasons, run_after, attempts, "
                 "error) VALUES ('flaky', 'manual', '{manual}', now() + interval '10 minutes', 1, "
                 "'OperationalError: server closed the connection')")

    result = run_worker("status")
    assert result.returncode == 0, result.stderr
    out = result.stdout

    models, events = out.split("Recent events")
    assert re.search(r"\b(59m|1h) \(cooldown\)", line_of(models, "cooling")), models
    assert line_of(models, "ready").split()[-1] == "now", models
    assert re.search(r"in 1h 5\dm \(backoff\)", line_of(models, "stuck")), models
    assert re.search(r"in (9|10)m \(retry\)", line_of(models, "flaky")), models

    attention = [line for line in models.splitlines() if "needs attention" in line]
    assert len(attention) == 1, models
    assert attention[0].startswith("! stuck needs attention: 3 automatic retrains in a row "
                                   "were not promoted")
    assert "worker trigger stuck" in attention[0]

    # The events table: a due column for pending events, "-" for the others.
    header = line_of(events.strip(), "id")
    assert header.split()[:5] == ["id", "model", "reasons", "status", "due"]
    pending = [line for line in events.splitlines() if " pending " in line]
    assert len(pending) == 4, events
    finished = [line for line in events.splitlines() if " succeeded " in line]
    assert all(line.split()[4] == "-" for line in finished), events


def test_status_of_one_model_keeps_its_attention_line_only(conn, run_worker):
    set_policy(conn, "stuck", cooldown="0")
    finished_event(conn, "stuck", promoted=True, minutes_ago=10)
    for minutes in (3, 2, 1):
        finished_event(conn, "stuck", promoted=False, minutes_ago=minutes)
    set_policy(conn, "fine")

    shown = run_worker("status", "--model", "fine")
    assert shown.returncode == 0, shown.stderr
    assert "needs attention" not in shown.stdout
    stuck = run_worker("status", "--model", "stuck")
    assert "! stuck needs attention" in stuck.stdout
