"""What `worker demo` and `worker status` print, from plain values: a
condition's values against its thresholds, and a pending event's wait."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from worker.demo import describe
from worker.status import due_text, duration

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def test_each_reason_is_told_with_its_values_and_thresholds():
    assert describe("error_rate", {
        "rolling_error_rate": 0.31, "rolling_threshold": 0.18, "champion_error": 0.13,
        "window_rows": 200}) == ("rolling error 0.310 over the newest 200 labelled rows > 0.180 "
                                 "(the champion's holdout error 0.130 + margin 0.050)")
    assert describe("error_rate", {"error_rate": 0.4, "threshold": 0.1}) == (
        "a row's error_rate 0.400 > error_rate_threshold 0.100")
    assert describe("performance", {"accuracy": 0.74, "min_accuracy": 0.8}) == (
        "monitor accuracy 0.740 < min_accuracy 0.800")
    assert describe("accuracy_drop", {"accuracy": 0.8, "previous_accuracy": 0.88,
                                      "tolerance": 0.05}) == (
        "accuracy 0.800, more than 0.050 below the previous 0.880")
    assert describe("drift_and_accuracy", {"drift_score": 0.41, "drift_threshold": 0.25,
                                           "accuracy": 0.86, "combined_max_accuracy": 0.9}) == (
        "drift (PSI) 0.410 > 0.250 and accuracy 0.860 < 0.900")
    assert describe("drift", {"drift_score": 0.41, "drift_threshold": 0.25}) == (
        "drift (PSI) 0.410 > 0.250")
    assert describe("schedule", {"last_success": None}).startswith("never trained")
    assert describe("manual", {"requested_by": "ana"}) == "requested by ana"


def test_values_close_to_their_threshold_get_the_digits_that_tell_them_apart():
    text = describe("performance", {"accuracy": 0.7996, "min_accuracy": 0.8})
    assert text == "monitor accuracy 0.7996 < min_accuracy 0.8000"
    # 34/200 "exceeds" 0.12 + 0.05 only in float arithmetic: said so.
    text = describe("error_rate", {"rolling_error_rate": 34 / 200,
                                   "rolling_threshold": 0.12 + 0.05, "champion_error": 0.12,
                                   "window_rows": 200})
    assert "0.170 over the newest 200 labelled rows > 0.170" in text
    assert text.endswith("equal but for float rounding")


def test_durations_are_short():
    assert [duration(timedelta(seconds=s)) for s in (0, 44.6, 60, 42 * 60 + 10, 3600,
                                                     3 * 3600 + 5 * 60, 50 * 3600)] == [
        "0s", "45s", "1m", "42m", "1h", "3h 5m", "2d 2h"]


def pending(run_after, *, error=None, cooldown_until=None, running_id=None):
    return {"run_after": run_after, "now": NOW, "error": error,
            "cooldown_until": cooldown_until, "running_id": running_id}


def test_a_pending_event_says_when_it_runs_and_why_it_waits():
    assert due_text(pending(NOW), attention=False) == "now"
    assert due_text(pending(NOW - timedelta(minutes=5), running_id=12), False) == "after event 12"
    later = NOW + timedelta(minutes=42)
    assert due_text(pending(later, cooldown_until=later), False) == "in 42m (cooldown)"
    assert due_text(pending(later, cooldown_until=NOW), attention=True) == "in 42m (backoff)"
    assert due_text(pending(later, error="OperationalError: gone"), False) == "in 42m (retry)"
    assert due_text(pending(later), False) == "in 42m"
    far = NOW + timedelta(days=3)
    assert due_text(pending(far, cooldown_until=far), False) == "2026-11-23 12:00 UTC (cooldown)"
