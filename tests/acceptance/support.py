"""Helpers for the acceptance tests: worker processes, polling, data."""

from __future__ import annotations

import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import copy_rows, events


class KnownBug(AssertionError):
    """The symptom of a reported worker bug. Tests marked
    ``xfail(strict=True, raises=KnownBug)`` fail for real on any other error
    (a precondition that did not hold, a timeout), so an xfail cannot hide
    an unrelated breakage."""


def symptom(ok: bool, message: str) -> None:
    """Like ``assert ok, message``, raising KnownBug."""
    if not ok:
        raise KnownBug(message)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1, on_timeout=None):
    """Poll ``predicate()`` until it returns a truthy value (returned) or the
    deadline passes (AssertionError naming ``what``; ``on_timeout()`` adds
    context such as worker logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log()))

    def wait_for_log(self, pattern: str, timeout: float = 30, count: int = 1) -> None:
        def seen():
            if self.count(pattern) >= count:
                return True
            if not self.alive():
                raise AssertionError(
                    f"worker {self.pid} exited ({self.proc.returncode}) before logging "
                    f"{pattern!r}:\n{self.log()}")
            return False

        wait_for(seen, timeout, f"{pattern!r} x{count} in the log of worker {self.pid}",
                 on_timeout=self.log)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running {timeout}s later:\n{self.log()}") from None

    def owns(self, worker_id: str | None) -> bool:
        return worker_id is not None and worker_id.endswith(f":{self.pid}")


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

COLORS = ["red", "green", "blue", "yellow"]


def rule(x: float) -> str:
    return "yes" if x > 0 else "no"


def labelled_rows(model: str, n: int, *, seed: int = 0, label_noise: float = 0.0,
                  invert: bool = False, label=None, with_prediction: bool = True,
                  error_every: int = 25) -> list[tuple]:
    """``n`` rows for copy_rows: features {"x": float, "color": str, "flag": bool},
    label "yes" if x > 0 else "no" (``label_noise``: share of flipped labels;
    ``invert``: every label flipped; ``label``: one fixed label). The
    prediction is the rule's answer, wrong on every ``error_every``-th row
    (an error rate of 4%, below the default 0.1 threshold), or None."""
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        x = rnd.uniform(-1, 1)
        features = {"x": round(x, 6), "color": rnd.choice(COLORS), "flag": rnd.random() < 0.5}
        truth = rule(x)
        if label is not None:
            y = label
        else:
            flip = invert or rnd.random() < label_noise
            y = ("no" if truth == "yes" else "yes") if flip else truth
        prediction = None
        if with_prediction:
            prediction = y if (i + 1) % error_every else ("no" if y == "yes" else "yes")
        rows.append((model, features, y, prediction, None))
    return rows


def insert_labelled(conn, model: str, n: int, **kwargs) -> None:
    """COPY ``n`` labelled rows of a model (see labelled_rows)."""
    copy_rows(conn, labelled_rows(model, n, **kwargs))


def insert_firing_row(conn, model: str, error_rate: float = 0.5) -> None:
    """One labelled row that reports a high error rate: records an event."""
    copy_rows(conn, [(model, {"x": 0.5, "color": "red", "flag": True}, "yes", "yes", error_rate)])


def request_retrain(conn, model: str) -> int:
    return conn.execute("SELECT request_retrain(%s)", (model,)).fetchone()[0]


def event(conn, event_id: int) -> dict:
    rows = [e for e in events(conn) if e["id"] == event_id]
    assert rows, f"no event {event_id}"
    return rows[0]


def wait_event(conn, event_id: int, statuses=("succeeded", "failed"), timeout: float = 60,
               workers=()) -> dict:
    """Poll until the event has one of ``statuses``; returns its row."""
    def done():
        row = event(conn, event_id)
        return row if row["status"] in statuses else None

    def context():
        row = event(conn, event_id)
        logs = "\n".join(f"--- worker {w.pid} ---\n{w.log()}" for w in workers)
        return f"event: {row}\n{logs}"

    return wait_for(done, timeout, f"event {event_id} to be {'/'.join(statuses)}",
                    on_timeout=context)
