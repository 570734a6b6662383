"""Training a model from labelled rows: plain data in, a fitted pipeline and
its holdout scores out. No database, no MLflow here.

A retrain (``challenge``) works on the model's newest rows, oldest first:

1. The data window: where the current regime starts. Rows from before a
   concept change teach the old concept, and rows from before an input
   shift keep the old inputs alive in the model and its drift baseline.
   - The champion's own window (the ids it learned from travel with the
     registered pipeline) is the default start.
   - A concept change since then moves it: a significant rise of the error
     rate of the predictions served for the rows the champion never
     learned from (``prediction``; where the newest rows have none, the
     champion's predictions, else a backtest model's). Without a champion
     window, the latest rise anywhere in the rows.
   - An input shift moves it: the latest point where a feature's
     distribution moved by more than half the drift threshold (PSI).
   The start comes from the champion's errors and the inputs, never from a
   challenger's score. (Those errors include the newest rows, the holdout
   among them; so the holdout's size follows them. A challenger gains
   nothing from it: it is neither fitted nor chosen on the holdout.)
2. The split, sized by that recency: the newest ``holdout_fraction`` of the
   data window is the holdout H, which decides promotion and nothing else;
   the same fraction of the rest, just before H, is the validation slice V.
3. Choices judged on V only: training windows ending before V (the data
   window's rows before V, a half and a quarter of them, and after a
   detected change every row before V within the input regime, in case the
   change was noise) and, for ``estimator='auto'``, logistic regression
   against gradient boosting. The data window and the champion's estimator
   are the defaults; another choice wins only when significantly better on
   V (McNemar's z on the rows where the two disagree), so that validation
   noise neither shrinks nor stretches the window.
4. The decision model: the chosen estimator on the chosen window plus V,
   scored on H next to the champion on H. Promoted when there is no
   champion or it is at least as accurate.
5. Fresh: a promoted model is refit on the same start through the newest
   row (holdout included), and that refit is what is registered and served,
   so that right after a change it predicts the new concept. An unpromoted
   one is registered as decided (it learned from the rows before H).

bench/adaptation_sim.py measures all this on drifting streams.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from .features import (NUMERIC, FeatureFrame, NoUsableFeatures, coerce,
                       frame_from_features, infer_kinds, preprocessor)

#: Threads per fit. Several workers may share a machine, and on the data
#: sizes of a retrain one thread is as fast as many (measured: a 12k-row fit
#: took 2.9 s with two threads, 1.6 s with one; two workers fitting at once
#: with all threads each slowed to ~44 s).
TRAINING_THREADS = int(os.environ.get("PG_RETRAIN_TRAINING_THREADS", "1"))

ESTIMATORS = ("hist_gradient_boosting", "logistic_regression", "random_forest", "auto")
#: What 'auto' chooses between, on the validation slice.
AUTO_CANDIDATES = ("logistic_regression", "hist_gradient_boosting")

#: The smallest data window: fewer rows since a change are topped up with
#: older ones (a model on a few dozen rows is worse than a blend).
MIN_WINDOW = 200
#: Windows tried below the data window, as fractions of its rows before V.
SMALLER_WINDOWS = (0.5, 0.25)
#: A window (or estimator) other than the default must beat it on V by this
#: many standard errors of a paired comparison (McNemar's z).
SIGNIFICANT_Z = 2.5
#: Change detection on served errors: z of the error rise (one-sided), at
#: least; over all rows, and over the rows new to the champion.
CHANGE_Z = 3.5
CHANGE_Z_SINCE = 3.5
#: Rows after a change point before it can be found. A retrain is usually
#: asked for because the newest rows' error was high (error_rate): that
#: selection alone makes the newest ~200 rows look like a change. Measured
#: on Bernoulli errors selected that way (the newest 200 rows' error above
#: the rate + 0.05): with 100 rows after, 13% false changes at z > 3.5 (33%
#: at 3.0); with 500, 3% (10%), while a rise from 11% to 17% error 500 rows
#: ago (SEA 8 -> 9) is found 75% of the time (90%).
CHANGE_MIN_AFTER = 500
#: Rows after a candidate change point compared with the rows before it.
CHANGE_AFTER_ROWS = 500
CHANGE_BEFORE_ROWS = 2000
#: Without served predictions for most of the newest rows, a backtest
#: model fitted before the newest BACKTEST_ROWS predicts them.
BACKTEST_ROWS = 5000
BACKTEST_FIT_ROWS = 10000
#: Most rows the drift baseline is computed from (see Decision.baseline_rows).
BASELINE_MAX_ROWS = 20000
#: Input shift: PSI above this fraction of the drift threshold cuts.
INPUT_SHIFT_FRACTION = 0.5
DRIFT_THRESHOLD = 0.25


class TrainingError(Exception):
    """A retrain that cannot succeed by trying again: the data is not enough."""


@dataclass
class TrainingData:
    """A model's labelled rows, oldest first. ``predictions`` holds what the
    serving model predicted for each row (None where unknown)."""

    features: list[dict]
    labels: list[str]
    row_ids: list[int] = field(default_factory=list)
    predictions: list[str | None] | None = None
    #: The features as ``frame_from_features(features)`` (a loader may build it faster).
    frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def feature_frame(self) -> pd.DataFrame:
        if self.frame is None:
            self.frame = frame_from_features(self.features)
        return self.frame


def make_estimator(name: str, labels=None):
    """The estimator; ``labels`` (those it will be fitted on) decide whether
    gradient boosting can stop early."""
    if name == "hist_gradient_boosting":
        # Early stopping on an inner stratified 10% split: on the few hundred
        # rows after a change 200 fixed iterations overfit the label noise
        # (SEA, 400 rows: 0.843 against 0.861), and it is cheaper at every
        # size. The split needs two rows of every class and a tenth of the
        # rows to hold each class once; otherwise 100 fixed iterations.
        if labels is not None and _can_stop_early(labels):
            return HistGradientBoostingClassifier(max_iter=200, early_stopping=True,
                                                  n_iter_no_change=10, random_state=0)
        return HistGradientBoostingClassifier(max_iter=100, early_stopping=False,
                                              random_state=0)
    if name == "logistic_regression":
        return LogisticRegression(max_iter=1000)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=0)
    raise TrainingError(f"unknown estimator {name!r}")


def _can_stop_early(labels) -> bool:
    counts = pd.Series(np.asarray(labels, dtype=object)).value_counts()
    return len(counts) >= 2 and counts.min() >= 2 and len(labels) // 10 >= len(counts)


def make_pipeline(kinds: dict[str, str], estimator: str, labels=None) -> Pipeline:
    return Pipeline([
        ("frame", FeatureFrame(kinds)),
        ("preprocess", preprocessor(kinds)),
        ("model", make_estimator(estimator, labels)),
    ])


# --------------------------------------------------------------------------
# Where the current regime starts

def error_change(errors: np.ndarray, *, since: int | None = None, step: int = 50,
                 after_rows: int = CHANGE_AFTER_ROWS, before_rows: int = CHANGE_BEFORE_ROWS,
                 z_crit: float | None = None,
                 min_after: int = CHANGE_MIN_AFTER) -> int | None:
    """Rows since the latest significant rise of the served error rate, or
    None.

    ``errors`` is 1.0 where the served prediction was wrong, 0.0 where right,
    NaN where there was none. At candidate points s (every ``step`` rows)
    the error rate of the rows after s is compared with the ``before_rows``
    rows before it (two-proportion z, one-sided).

    ``since``: the position from which the rows are new to the champion
    (it served them and never learned from them). Only points from a little
    before it are tried, and the rows after s are all rows from s on: the
    champion did not change there, so a change keeps showing until now.
    Without it every point is tried, each with the ``after_rows`` rows after
    it (a change shows only until the model adapted), against a threshold
    that grows with the number of points (a scan of 50k rows at z > 3.5
    finds a "change" in pure noise one time in seven; at the threshold
    here about one in a hundred)."""
    n = len(errors)
    known = ~np.isnan(errors)
    if known.sum() < 200:
        return None
    cum_n = np.concatenate([[0], np.cumsum(known)])
    cum_e = np.concatenate([[0], np.cumsum(np.where(known, errors, 0.0))])
    oldest = 0 if since is None else max(0, since - after_rows)
    points = np.arange(n - step, oldest, -step)            # newest first
    points = points[points >= oldest]
    if points.size == 0:
        return None
    a_end = np.full(points.shape, n) if since is not None else np.minimum(points + after_rows, n)
    b_start = np.maximum(points - before_rows, 0)
    a_n = cum_n[a_end] - cum_n[points]
    a_e = cum_e[a_end] - cum_e[points]
    b_n = cum_n[points] - cum_n[b_start]
    b_e = cum_e[points] - cum_e[b_start]
    ok = (a_n >= min_after) & (b_n >= 100)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (a_e + b_e) / (a_n + b_n)
        se = np.sqrt(pooled * (1 - pooled) * (1 / a_n + 1 / b_n))
        z = np.where(ok & (se > 0), (a_e / a_n - b_e / b_n) / se, 0.0)
    if z_crit is None and since is None:
        scanned = (n - oldest) / (before_rows + after_rows)
        z_crit = max(CHANGE_Z, math.sqrt(2 * math.log(max(scanned, 1.0))) + 2.0)
    elif z_crit is None:
        # Few, strongly overlapping points: the threshold grows slowly.
        scanned = (n - oldest) / 1000
        z_crit = max(CHANGE_Z_SINCE, math.sqrt(2 * math.log(max(scanned, 1.0))) + 1.5)
    rows = _latest_peak(points, z, z_crit, n, lean=0.75 if since is None else 1.0)
    if rows is not None and since is not None and rows > after_rows + min_after:
        # With all rows after each point, a long-missed older change can
        # outscore the newest one: look again within the rows after it.
        newer = error_change(errors[n - rows:], since=after_rows, step=step,
                             after_rows=after_rows, before_rows=before_rows,
                             z_crit=z_crit, min_after=min_after)
        if newer is not None:
            rows = newer
    return rows


def _latest_peak(points: np.ndarray, stat: np.ndarray, crit: float, n: int,
                 lean: float = 0.75, gap: int = 500) -> int | None:
    """Among points ordered newest first, the newest cluster of points above
    ``crit`` (points less than ``gap`` rows apart belong together); of it,
    the oldest point within ``lean`` of the cluster's peak, as rows since
    that point. (With a bounded window after each point, a change point
    scores about as high as the points just after it, whose rows after are
    as wrong but fewer: the oldest keeps the most rows of the new regime.)"""
    above = np.flatnonzero(stat > crit)
    if above.size == 0:
        return None
    end = 1
    while end < above.size and points[above[end - 1]] - points[above[end]] < gap:
        end += 1
    cluster = above[:end]
    peak = stat[cluster].max()
    oldest = cluster[stat[cluster] >= lean * peak][-1]
    return int(n - points[oldest])


def input_shift(frame: pd.DataFrame, kinds: dict[str, str], *, threshold: float,
                step: int = 100, after_rows: int = 500, before_rows: int = 1000,
                min_rows: int = 300) -> int | None:
    """Rows since the latest point where the inputs moved: for each candidate
    point s (every ``step`` rows), the largest per-feature PSI between the
    rows after s (up to ``after_rows``, at least ``min_rows``) and the
    ``before_rows`` before it, binned like the drift monitor (deciles of the
    newest rows, frequent categories, missing). The PSI of two samples of
    one distribution is about (bins - 1) * (1/a + 1/b), not 0: that much is
    subtracted before comparing with ``threshold``. ``frame`` is coerced
    (numbers as floats). None when nothing moved by more than that."""
    n = len(frame)
    if n < 2 * min_rows:
        return None
    n_blocks = math.ceil(n / step)
    points = np.arange(n_blocks - 1, 0, -1) * step      # block starts, newest first
    points = points[n - points >= min_rows]
    if points.size == 0:
        return None
    recent = frame.iloc[max(0, n - 1000):]
    block_of = np.arange(n) // step
    pb = points // step
    a_end = np.minimum(pb + math.ceil(after_rows / step), n_blocks)
    b_start = np.maximum(pb - math.ceil(before_rows / step), 0)
    worst = np.zeros(points.size)
    for column, kind in kinds.items():
        codes = _bin_codes(frame[column], recent[column], kind)
        counts = np.zeros((n_blocks, int(codes.max()) + 1))
        np.add.at(counts, (block_of, codes), 1)
        cum = np.vstack([np.zeros(counts.shape[1]), np.cumsum(counts, axis=0)])
        after = cum[a_end] - cum[pb]
        before = cum[pb] - cum[b_start]
        a_rows, b_rows = after.sum(1), before.sum(1)
        a_share = np.maximum(after / np.maximum(a_rows, 1)[:, None], 1e-4)
        b_share = np.maximum(before / np.maximum(b_rows, 1)[:, None], 1e-4)
        psi = ((a_share - b_share) * np.log(a_share / b_share)).sum(1)
        bins = ((after + before) > 0).sum(1)
        psi -= (bins - 1) * (1 / np.maximum(a_rows, 1) + 1 / np.maximum(b_rows, 1))
        psi[b_rows < min_rows] = 0.0
        worst = np.maximum(worst, psi)
    return _latest_peak(points, worst, threshold, n)


def _bin_codes(values: pd.Series, recent: pd.Series, kind: str) -> np.ndarray:
    """Bin numbers 0.. for a column: missing is 0; numbers by deciles of the
    recent rows; categories by the recent frequent ones (other last)."""
    if kind == NUMERIC:
        numbers = values.to_numpy(dtype=float)
        ref = recent.to_numpy(dtype=float)
        ref = ref[np.isfinite(ref)]
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1])) if ref.size else np.array([])
        codes = np.searchsorted(edges, numbers, side="right") + 1
        return np.where(np.isfinite(numbers), codes, 0)
    frequent = recent.dropna().value_counts().index[:10]
    # Categorical codes: -1 for other values and for missing ones.
    codes = pd.Categorical(values, categories=frequent).codes.astype(int) + 2
    codes[values.isna().to_numpy()] = 0
    return codes


# --------------------------------------------------------------------------
# The split and the choices

@dataclass
class Split:
    """Row positions (oldest first) of one retrain's data: the data window
    starts at ``start``; validation V is [valid_start, holdout_start), the
    holdout H [holdout_start, n)."""

    n: int
    start: int
    valid_start: int
    holdout_start: int
    error_change: int | None
    input_change: int | None

    @property
    def window(self) -> int:
        return self.valid_start - self.start


def plan_split(data: TrainingData, x: pd.DataFrame, kinds: dict[str, str], *,
               holdout_fraction: float, training_window: int | None, min_rows: int,
               drift_threshold: float = DRIFT_THRESHOLD,
               champion_window: tuple[int, int] | None = None,
               backtest_estimator: str = "hist_gradient_boosting") -> Split:
    """Where the data window starts, and the holdout and validation slices
    sized from it.

    ``champion_window`` is (first id, last id) of the rows the champion
    learned from: its start is the current regime's start unless the errors
    rose since its last row. The errors are the served predictions'; where
    the newest rows mostly have none, a backtest's: one model fitted on the
    rows before the newest BACKTEST_ROWS predicts those."""
    n = len(data)
    error_rows = input_rows = None
    if training_window is not None:
        size = min(training_window, n)
    else:
        errors = np.full(n, np.nan)
        if data.predictions is not None:
            errors = np.array([np.nan if p is None else float(p != y)
                               for p, y in zip(data.predictions, data.labels)])
        prior_start, since = 0, None
        if champion_window is not None and data.row_ids:
            ids = np.asarray(data.row_ids)
            prior_start = int(np.searchsorted(ids, champion_window[0], side="left"))
            since = int(np.searchsorted(ids, champion_window[1], side="right"))
        recent = min(BACKTEST_ROWS, n // 2)
        if recent >= MIN_WINDOW and np.isfinite(errors[n - recent:]).sum() < recent / 2:
            errors = _backtest_errors(x, np.asarray(data.labels, dtype=object), kinds,
                                      n - recent, backtest_estimator)
            since = n - recent if since is None else max(since, n - recent)
        if since is not None:
            if since < n:
                error_rows = error_change(errors, since=since)
            size = n - prior_start if error_rows is None else error_rows
        else:
            error_rows = error_change(errors)
            size = n if error_rows is None else error_rows
        input_rows = input_shift(x, kinds, threshold=INPUT_SHIFT_FRACTION * drift_threshold)
        if input_rows is not None:
            size = min(size, input_rows)
        size = min(n, max(size, min_rows, MIN_WINDOW))
    holdout = max(1, int(round(size * holdout_fraction)))
    valid = max(1, int(round((size - holdout) * holdout_fraction)))
    return Split(n=n, start=n - size, valid_start=n - holdout - valid,
                 holdout_start=n - holdout, error_change=error_rows, input_change=input_rows)


def _backtest_errors(x: pd.DataFrame, labels: np.ndarray, kinds: dict[str, str], cut: int,
                     estimator: str) -> np.ndarray:
    """1.0/0.0 where a model fitted on up to BACKTEST_FIT_ROWS rows before
    ``cut`` is wrong/right on the rows from ``cut``; NaN before it."""
    errors = np.full(len(labels), np.nan)
    start = max(0, cut - BACKTEST_FIT_ROWS)
    if len(set(labels[start:cut])) < 2:
        return errors
    try:
        with threadpool_limits(TRAINING_THREADS):
            model = _fit(kinds, estimator, x.iloc[start:cut], labels[start:cut])
    except Exception:  # noqa: BLE001 - an aid to the window; the retrain goes on
        return errors
    errors[cut:] = ~_correct(model, x.iloc[cut:], labels[cut:])
    return errors


def mcnemar_z(better: np.ndarray, worse: np.ndarray) -> float:
    """z of 'better' beating 'worse' on the same rows (True = right)."""
    wins = int(np.sum(better & ~worse))
    losses = int(np.sum(~better & worse))
    if wins + losses == 0:
        return 0.0
    return (wins - losses) / math.sqrt(wins + losses)


def choose(default, candidates, correct: dict, z: float = SIGNIFICANT_Z):
    """The key of ``candidates`` to use: ``default`` unless another is
    significantly better than it on the validation rows (``correct[key]`` is
    a boolean array per row); among such, the most accurate."""
    best, best_acc = default, None
    for key in candidates:
        if key == default:
            continue
        if mcnemar_z(correct[key], correct[default]) > z:
            acc = float(np.mean(correct[key]))
            if best_acc is None or acc > best_acc:
                best, best_acc = key, acc
    return best


@dataclass
class TrainedModel:
    """The decision model and what it was chosen from."""

    pipeline: Pipeline            # trained on [start, holdout_start): scored on H
    accuracy: float               # on H
    validation_accuracy: float    # of the chosen window and estimator, on V
    estimator: str
    start: int                    # first row of the chosen window
    split: Split
    windows_tried: dict[str, float]
    feature_kinds: dict[str, str]
    seconds: float
    holdout_features: pd.DataFrame
    holdout_labels: np.ndarray
    _frame: pd.DataFrame = field(repr=False, default=None)
    _labels: np.ndarray = field(repr=False, default=None)

    @property
    def training_rows(self) -> int:
        return self.split.holdout_start - self.start

    @property
    def window(self) -> int:
        """Rows of the chosen window before V."""
        return self.split.valid_start - self.start

    @property
    def holdout_rows(self) -> int:
        return self.split.n - self.split.holdout_start

    def refit(self) -> Pipeline:
        """The same estimator on the same start through the newest row."""
        with threadpool_limits(TRAINING_THREADS):
            return _fit(self.feature_kinds, self.estimator,
                        self._frame.iloc[self.start:], self._labels[self.start:])


def _fit(kinds, estimator, x, y) -> Pipeline:
    pipeline = make_pipeline(kinds, estimator, y)
    pipeline.fit(x, y)
    return pipeline


def _prepare(data: TrainingData, min_training_rows: int):
    if len(data) < min_training_rows:
        raise TrainingError(
            f"too few labelled rows: {len(data)} (the policy needs min_training_rows="
            f"{min_training_rows})"
        )
    labels = np.asarray(data.labels, dtype=object)
    classes = set(labels)
    if len(classes) < 2:
        raise TrainingError(
            f"only one class in {len(data)} labelled rows ({next(iter(classes))!r}): "
            "a classifier needs at least two"
        )
    frame = data.feature_frame()
    kinds = infer_kinds(frame)
    if not kinds:
        raise TrainingError("no usable feature: every feature column is empty")
    return frame, labels, kinds


def train(data: TrainingData, *, estimator: str = "auto", min_training_rows: int = 50,
          holdout_fraction: float = 0.2, training_window: int | None = None,
          drift_threshold: float = DRIFT_THRESHOLD, prefer_recent: bool = False,
          prior_estimator: str | None = None,
          champion_window: tuple[int, int] | None = None) -> TrainedModel:
    """Choose the window (and for 'auto' the estimator) on V, fit the
    decision model on the rows before the holdout and score it on H.
    Raises TrainingError when it cannot work.

    ``prefer_recent`` (the retrain was asked for because the inputs moved)
    never lets a window reach back past the data window. With 'auto',
    ``prior_estimator`` (the champion's) is the default estimator, which
    another must beat significantly on V; without it, the first of
    AUTO_CANDIDATES."""
    started = time.perf_counter()
    if estimator not in ESTIMATORS:
        raise TrainingError(f"unknown estimator {estimator!r}")
    frame, labels, kinds = _prepare(data, min_training_rows)
    # Coerced once; the pipelines' own FeatureFrame step leaves it as it is.
    x = coerce(frame, kinds)
    split = plan_split(data, x, kinds, holdout_fraction=holdout_fraction,
                       training_window=training_window, min_rows=min_training_rows,
                       drift_threshold=drift_threshold, champion_window=champion_window,
                       backtest_estimator=_backtest_estimator(estimator, prior_estimator))
    n, vs, hs = split.n, split.valid_start, split.holdout_start

    # Window candidates: first rows of windows ending at V.
    starts = {split.start}
    before_v = vs - split.start
    for fraction in SMALLER_WINDOWS:
        rows = int(before_v * fraction)
        if rows >= max(50, min_training_rows // 2):
            starts.add(vs - rows)
    if training_window is None and not prefer_recent and split.error_change is not None \
            and split.start > 0:
        # The data window was cut at a change detected now: every row before
        # V (within the input regime) is tried too, in case it was noise.
        oldest = 0 if split.input_change is None else max(0, n - split.input_change)
        if oldest < split.start:
            starts.add(oldest)
    if training_window is not None:
        starts = {split.start}
    if estimator == "auto":
        estimators = list(AUTO_CANDIDATES)
        if prior_estimator in estimators:
            estimators.remove(prior_estimator)
            estimators.insert(0, prior_estimator)
    else:
        estimators = [estimator]

    valid_x, valid_y = x.iloc[vs:hs], labels[vs:hs]
    correct: dict[tuple[str, int], np.ndarray] = {}
    with threadpool_limits(TRAINING_THREADS):
        for name in estimators:
            for start in sorted(starts):
                window_y = labels[start:vs]
                if len(set(window_y)) < 2:
                    continue  # a recent window with one class cannot be fitted
                try:
                    model = _fit(kinds, name, x.iloc[start:vs], window_y)
                except NoUsableFeatures:
                    continue
                correct[(name, start)] = _correct(model, valid_x, valid_y)
        if not correct:
            raise TrainingError(
                "no training window has two classes and a usable feature "
                f"({vs} rows before the validation slice)"
            )
        chosen = {}
        for name in estimators:
            keys = [k for k in correct if k[0] == name]
            if not keys:
                continue
            default = (name, split.start) if (name, split.start) in correct else \
                min(keys, key=lambda k: k[1])
            chosen[name] = choose(default, keys, correct)
        # Between estimators: the first (the champion's, else the simpler)
        # unless another is significantly better on V at its chosen window.
        best = chosen[estimators[0]] if estimators[0] in chosen else next(iter(chosen.values()))
        best = choose(best, list(chosen.values()), correct)
        name, start = best
        decision = _fit(kinds, name, x.iloc[start:hs], labels[start:hs])
        accuracy = float(np.mean(_correct(decision, x.iloc[hs:], labels[hs:])))

    tried = {f"{k[0]}:{vs - k[1]}": round(float(np.mean(v)), 4) for k, v in correct.items()}
    return TrainedModel(
        pipeline=decision,
        accuracy=accuracy,
        validation_accuracy=float(np.mean(correct[best])),
        estimator=name,
        start=start,
        split=split,
        windows_tried=tried,
        feature_kinds=kinds,
        seconds=time.perf_counter() - started,
        holdout_features=frame.iloc[hs:],
        holdout_labels=labels[hs:],
        _frame=x,
        _labels=labels,
    )


def _backtest_estimator(estimator: str, prior: str | None) -> str:
    if estimator != "auto":
        return estimator
    return prior if prior in AUTO_CANDIDATES else "hist_gradient_boosting"


def _correct(pipeline, x, y) -> np.ndarray:
    return np.asarray(pipeline.predict(x), dtype=object).astype(str) == y.astype(str)


def score(pipeline, features: pd.DataFrame, labels: np.ndarray) -> float:
    """Accuracy of any fitted pipeline (e.g. the champion) on a holdout."""
    predictions = np.asarray(pipeline.predict(features), dtype=object)
    return float(np.mean(predictions.astype(str) == labels.astype(str)))


# --------------------------------------------------------------------------
# One retrain's decision

@dataclass
class Decision:
    trained: TrainedModel
    champion_accuracy: float | None
    champion_error: str | None
    promoted: bool
    refit: bool
    pipeline: Pipeline            # what is registered: the refit when promoted
    rows_used: int                # rows the registered model learned from
    last_row: int                 # position after the newest row it learned from
    seconds: float

    @property
    def accuracy(self) -> float:
        return self.trained.accuracy

    @property
    def feature_kinds(self) -> dict[str, str]:
        return self.trained.feature_kinds

    @property
    def window(self) -> int:
        return self.trained.window

    @property
    def holdout_rows(self) -> int:
        return self.trained.holdout_rows

    def baseline_rows(self, data: TrainingData) -> list[dict]:
        """The rows the drift baseline describes: the chosen window through
        the newest row (where the inputs are now), holdout included; of a
        window longer than BASELINE_MAX_ROWS, every k-th row (drift.baseline
        costs ~20 s per million rows, and deciles and shares of 20k evenly
        spread rows differ from the window's by a PSI of ~0.0005)."""
        rows = len(data) - self.trained.start
        if rows <= BASELINE_MAX_ROWS:
            return data.features[self.trained.start:]
        step = math.ceil(rows / BASELINE_MAX_ROWS)
        # The newest row is always in; the slice parses only what it keeps.
        first = self.trained.start + (rows - 1) % step
        return data.features[first::step]

    def trained_through_id(self, data: TrainingData) -> int | None:
        return data.row_ids[self.last_row - 1] if data.row_ids else None


#: Attribute of a registered pipeline: (first id, last id) of the rows it
#: learned from.
WINDOW_ATTRIBUTE = "pg_retrain_window_"


def estimator_name(pipeline) -> str | None:
    """Which of ESTIMATORS a fitted pipeline's last step is, if any."""
    model = pipeline.steps[-1][1] if isinstance(pipeline, Pipeline) else pipeline
    return {HistGradientBoostingClassifier: "hist_gradient_boosting",
            LogisticRegression: "logistic_regression",
            RandomForestClassifier: "random_forest"}.get(type(model))


def _with_champion_predictions(data: TrainingData, champion, window) -> TrainingData:
    """Rows newer than the champion's window that carry no served
    prediction get the champion's: it never learned from them, so its
    predictions there are out of sample, as served ones are."""
    if window is None or not data.row_ids:
        return data
    predictions = list(data.predictions) if data.predictions is not None else [None] * len(data)
    since = int(np.searchsorted(np.asarray(data.row_ids), window[1], side="right"))
    missing = [i for i in range(since, len(data)) if predictions[i] is None]
    if not missing:
        return data
    try:
        predicted = champion.predict(data.feature_frame().iloc[missing])
    except Exception:  # noqa: BLE001 - a champion that cannot predict adds nothing
        return data
    for i, p in zip(missing, predicted):
        predictions[i] = str(p)
    return TrainingData(data.features, data.labels, data.row_ids, predictions, data.frame)


def challenge(data: TrainingData, champion=None, **options) -> Decision:
    """Train a challenger (``train(**options)``), score the champion on the
    same holdout, promote when there is no champion or the challenger is at
    least as accurate, and refit a promoted challenger through the newest
    row. A champion that cannot score the holdout loses."""
    started = time.perf_counter()
    if champion is not None:
        options.setdefault("prior_estimator", estimator_name(champion))
        window = options.setdefault("champion_window", getattr(champion, WINDOW_ATTRIBUTE, None))
        data = _with_champion_predictions(data, champion, window)
    trained = train(data, **options)
    champion_accuracy = champion_error = None
    if champion is not None:
        try:
            champion_accuracy = score(champion, trained.holdout_features, trained.holdout_labels)
        except Exception as exc:  # noqa: BLE001 - any failure to score loses
            champion_error = f"{type(exc).__name__}: {exc}"
            champion_accuracy = 0.0
    promoted = champion_accuracy is None or trained.accuracy >= champion_accuracy
    if promoted:
        pipeline, rows_used, last = trained.refit(), len(data) - trained.start, len(data)
    else:
        pipeline, rows_used, last = trained.pipeline, trained.training_rows, \
            trained.split.holdout_start
    if data.row_ids:
        # Travels with the registered model: the next retrain starts from it.
        setattr(pipeline, WINDOW_ATTRIBUTE, (int(data.row_ids[trained.start]),
                                             int(data.row_ids[last - 1])))
    return Decision(trained=trained, champion_accuracy=champion_accuracy,
                    champion_error=champion_error, promoted=promoted, refit=promoted,
                    pipeline=pipeline, rows_used=rows_used, last_row=last,
                    seconds=time.perf_counter() - started)
