"""Helpers for the drift monitor tests (SPEC section 6): data generators, a
baseline stored exactly the way the worker stores one, and an independent
recount of the recent bin counts from scratch, in Python.

The recount bins with the rules of worker/drift.py, written out again here
(not by calling the code under test's SQL):
- numeric feature: number of edges <= value (numpy searchsorted,
  side="right"); a value that is not a finite JSON number is missing (-1);
- categorical feature: 1-based position of the value's text in
  ``categories``, 0 (other) when absent;
- missing (key absent or JSON null): -1.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb

from worker import drift
from worker.features import frame_from_features, infer_kinds

COLORS = ("red", "green", "blue", "yellow")
BASE_COLOR_WEIGHTS = (0.4, 0.3, 0.2, 0.1)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def feature_rows(n: int, seed: int, *, x_mean: float = 0.0, x_sd: float = 1.0,
                 color_weights=BASE_COLOR_WEIGHTS, flag_p: float = 0.3,
                 drop: tuple[str, ...] = (), extra: dict | None = None) -> list[dict]:
    """``n`` feature objects: x ~ N(x_mean, x_sd) (numeric), n an integer in
    0..5 (numeric with many ties on the bin edges), color (categorical) and
    flag (boolean). ``drop``: keys left out; ``extra``: keys added."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        row = {
            "x": rnd.gauss(x_mean, x_sd),
            "n": rnd.choice((0, 1, 1, 2, 2, 2, 3, 3, 4, 5)),
            "color": rnd.choices(COLORS, weights=color_weights)[0],
            "flag": rnd.random() < flag_p,
        }
        for key in drop:
            row.pop(key, None)
        if extra:
            row.update(extra)
        rows.append(row)
    return rows


def scored(features: list[dict], model: str, *, wrong_every: int | None = None,
           wrong_share: float | None = None, label: bool = True) -> list[tuple]:
    """Rows for helpers.copy_rows: label "yes"/"no" and a prediction that is
    wrong on a deterministic share of the rows (``wrong_share``: the first
    round(share * 20) rows of every 20). ``label=False``: prediction only."""
    rows = []
    for i, f in enumerate(features):
        truth = "yes" if i % 2 else "no"
        wrong = False
        if wrong_share is not None:
            wrong = (i % 20) < round(wrong_share * 20)
        elif wrong_every:
            wrong = i % wrong_every == 0
        prediction = ("no" if truth == "yes" else "yes") if wrong else truth
        rows.append((model, f, truth if label else None, prediction, None))
    return rows


def unscored(features: list[dict], model: str) -> list[tuple]:
    return [(model, f, None, None, None) for f in features]


def insert_values(conn, rows: list[tuple]) -> list[int]:
    """One multi-row INSERT statement of (model, features, label, prediction,
    error_rate) rows; returns the ids in statement order."""
    values = sql.SQL(", ").join(sql.SQL("(%s, %s, %s, %s, %s)") for _ in rows)
    params: list = []
    for model, features, label, prediction, error_rate in rows:
        params += [model, Jsonb(features), label, prediction, error_rate]
    return [r[0] for r in conn.execute(
        sql.SQL("INSERT INTO training_data (model_name, features, label, prediction, error_rate) "
                "VALUES {} RETURNING id").format(values), params).fetchall()]


# ---------------------------------------------------------------------------
# Baselines, exactly as worker/claiming.py stores them
# ---------------------------------------------------------------------------


def store_baseline(conn, model: str, rows: list[dict], *, version: str = "1",
                   kinds: dict[str, str] | None = None,
                   after_row_id: int | None = None) -> list[drift.FeatureBaseline]:
    """``after_row_id``: the newest row the retrain learned from; default the
    model's newest row now (every row so far is the baseline's)."""
    if kinds is None:
        kinds = infer_kinds(frame_from_features(rows))
    if after_row_id is None:
        after_row_id = conn.execute(
            "SELECT coalesce(max(id), 0) FROM training_data WHERE model_name = %s",
            (model,)).fetchone()[0]
    features = drift.baseline(rows, kinds)
    conn.execute("SELECT store_drift_baseline(%s, %s, NULL, %s, %s, %s)",
                 (model, version, len(rows), after_row_id, Jsonb([asdict(f) for f in features])))
    return features


def baseline_row(conn, model: str) -> dict | None:
    cur = conn.execute(
        "SELECT model_name, model_version, baseline_rows, after_row_id, recent_rows, "
        "labelled_rows, correct_rows FROM drift_baselines WHERE model_name = %s", (model,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([c.name for c in cur.description], row))


# ---------------------------------------------------------------------------
# Refresh and read back
# ---------------------------------------------------------------------------


def refresh(conn, model: str | None = None) -> dict[str, dict]:
    """``SELECT * FROM refresh_drift(model)``, keyed by model name."""
    cur = conn.execute("SELECT * FROM refresh_drift(%s)", (model,))
    names = [c.name for c in cur.description]
    return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}


def feature_drift(conn, model: str) -> dict[str, dict]:
    cur = conn.execute("SELECT * FROM feature_drift WHERE model_name = %s", (model,))
    names = [c.name for c in cur.description]
    return {r[1]: dict(zip(names, r)) for r in cur.fetchall()}


def monitor_rows(conn, model: str) -> list[tuple]:
    """(id, model_version, accuracy, drift_score) of the model's monitor rows."""
    return conn.execute(
        "SELECT id, model_version, accuracy, drift_score FROM model_metrics "
        "WHERE model_name = %s AND source = 'monitor' ORDER BY id", (model,)).fetchall()


# ---------------------------------------------------------------------------
# The recount
# ---------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value) -> float:
    """A JSON number as a float; beyond double precision, +-inf (pg-retrain's
    choice: such numbers fall in the outermost bins)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bin_of(kind: str, edges: list[float], categories: list[str], value) -> int:
    if value is None:
        return -1
    if kind == "numeric":
        if not _is_number(value):
            return -1
        return int(np.searchsorted(np.asarray(edges, dtype=float), _as_float(value), side="right"))
    text = _text(value)
    return categories.index(text) + 1 if text in categories else 0


def expected_counts(conn, model: str, rows: list[dict]) -> dict[tuple[str, int], int]:
    """The recent count of every (feature, bin) the model's baseline scores,
    for these feature objects, binned from scratch."""
    definitions = conn.execute(
        "SELECT feature, kind, edges, categories FROM drift_features "
        "WHERE model_name = %s", (model,)).fetchall()
    counts: Counter = Counter()
    for feature, kind, edges, categories in definitions:
        for row in rows:
            counts[(feature, bin_of(kind, edges, categories, row.get(feature)))] += 1
    return dict(counts)


def stored_counts(conn, model: str) -> dict[tuple[str, int], int]:
    return {(f, b): n for f, b, n in conn.execute(
        "SELECT feature, bin, recent_count FROM drift_bins WHERE model_name = %s",
        (model,)).fetchall()}


def recent_window(conn, model: str) -> list[tuple]:
    """(id, features, label, prediction) of the model's recent window,
    written out plainly: its newest drift_window rows above the baseline's
    after_row_id, oldest first."""
    rows = conn.execute(
        "SELECT t.id, t.features, t.label, t.prediction FROM training_data AS t "
        "JOIN drift_baselines AS d USING (model_name) "
        "WHERE t.model_name = %s AND t.id > d.after_row_id "
        "ORDER BY t.id DESC LIMIT (SELECT drift_window FROM retrain_policy_for(%s))",
        (model, model)).fetchall()
    return rows[::-1]


def assert_recount(conn, model: str, rows: list[dict] | None = None) -> None:
    """Every bin's recent_count equals a recount from scratch, and
    recent_rows equals the number of rows. ``rows`` defaults to the model's
    recent window (recent_window)."""
    if rows is None:
        rows = [r[1] for r in recent_window(conn, model)]
    expected = expected_counts(conn, model, rows)
    stored = stored_counts(conn, model)
    missing_bins = sorted(k for k in expected if k not in stored)
    assert not missing_bins, f"{model}: rows binned into bins the baseline lacks: {missing_bins}"
    wrong = {k: (stored[k], expected.get(k, 0)) for k in stored if stored[k] != expected.get(k, 0)}
    assert not wrong, f"{model}: (feature, bin): (stored, recount) differ: {wrong}"
    assert baseline_row(conn, model)["recent_rows"] == len(rows)


def expected_accuracy(rows: list[tuple]) -> tuple[int, int]:
    """(labelled rows with a prediction, of which correct) of (id, features,
    label, prediction) rows."""
    labelled = [(lab, pred) for _, _, lab, pred in rows if lab is not None and pred is not None]
    return len(labelled), sum(1 for lab, pred in labelled if lab == pred)


def quiet_policy(conn, model: str, **overrides) -> None:
    """A policy for the model on which only the drift conditions can fire:
    no schedule, no cooldown, the error-rate, performance and accuracy-drop
    conditions out of reach (each test sets what it examines)."""
    from tests.helpers import set_policy

    values = dict(schedule_interval=None, cooldown="0", error_rate_threshold=1.0,
                  min_accuracy=0.0, accuracy_drop_tolerance=1.0)
    values.update(overrides)
    set_policy(conn, model, **values)
