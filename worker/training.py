"""Training a model from labelled rows: plain data in, a fitted pipeline and
its holdout scores out. No database, no MLflow here.

The training window matters as much as the estimator: after a concept
changes, old rows teach the old concept. With the policy's training_window
unset, ``train`` fits on a few recent windows (all rows, the newest half,
quarter, eighth) and keeps the one that scores best on the holdout, so a
model retrained after a change learns where the data is now.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from .features import FeatureFrame, NoUsableFeatures, frame_from_features, infer_kinds, preprocessor

WINDOW_FRACTIONS = (1.0, 0.5, 0.25, 0.125)

#: Threads per fit. Several workers may share a machine, and on the data
#: sizes of a retrain one thread is as fast as many (measured: a 12k-row fit
#: took 2.9 s with two threads, 1.6 s with one; two workers fitting at once
#: with all threads each slowed to ~44 s).
TRAINING_THREADS = int(os.environ.get("PG_RETRAIN_TRAINING_THREADS", "1"))


class TrainingError(Exception):
    """A retrain that cannot succeed by trying again: the data is not enough."""


@dataclass
class TrainingData:
    """A model's labelled rows, oldest first."""

    features: list[dict]
    labels: list[str]
    row_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TrainedModel:
    pipeline: Pipeline
    accuracy: float
    training_rows: int
    holdout_rows: int
    window: int
    windows_tried: dict[int, float]
    feature_kinds: dict[str, str]
    seconds: float
    holdout_features: pd.DataFrame
    holdout_labels: np.ndarray


def make_estimator(name: str):
    if name == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=200, early_stopping=False, random_state=0)
    if name == "logistic_regression":
        return LogisticRegression(max_iter=1000)
    if name == "random_forest":
        return RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=0)
    raise TrainingError(f"unknown estimator {name!r}")


def make_pipeline(kinds: dict[str, str], estimator: str) -> Pipeline:
    return Pipeline([
        ("frame", FeatureFrame(kinds)),
        ("preprocess", preprocessor(kinds)),
        ("model", make_estimator(estimator)),
    ])


def split_holdout(n_rows: int, holdout_fraction: float) -> int:
    """Index where the holdout (the newest rows) starts."""
    holdout = max(1, int(round(n_rows * holdout_fraction)))
    return n_rows - holdout


def candidate_windows(n_train: int, min_rows: int, fixed: int | None) -> list[int]:
    if fixed is not None:
        return [min(fixed, n_train)]
    sizes = {max(min_rows, int(n_train * f)) for f in WINDOW_FRACTIONS}
    return sorted((s for s in sizes if s <= n_train), reverse=True)


#: Windows scoring within this of the best count as equally good.
WINDOW_TIE = 0.005


def train(data: TrainingData, *, estimator: str = "hist_gradient_boosting",
          min_training_rows: int = 50, holdout_fraction: float = 0.2,
          training_window: int | None = None, prefer_recent: bool = False) -> TrainedModel:
    """Fit on the rows before the holdout (the newest ``holdout_fraction``)
    and score on the holdout. Raises TrainingError when it cannot work.

    Among windows that score equally well, the largest wins (more data, less
    variance) unless ``prefer_recent``: after the inputs moved, the smallest
    such window learns - and baselines - where they are now instead of a
    blend that keeps the old distribution alive."""
    started = time.perf_counter()
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

    frame = frame_from_features(data.features)
    kinds = infer_kinds(frame)
    if not kinds:
        raise TrainingError("no usable feature: every feature column is empty")

    cut = split_holdout(len(data), holdout_fraction)
    train_x, holdout_x = frame.iloc[:cut], frame.iloc[cut:]
    train_y, holdout_y = labels[:cut], labels[cut:]

    with threadpool_limits(TRAINING_THREADS):
        fitted = _fit_windows(kinds, estimator, train_x, train_y, holdout_x, holdout_y, cut,
                              candidate_windows(cut, min(min_training_rows, cut), training_window))
    tried = {window: accuracy for window, accuracy, _ in fitted}
    best = None
    if fitted:
        top = max(accuracy for _, accuracy, _ in fitted)
        good = [f for f in fitted if f[1] >= top - WINDOW_TIE]
        # fitted runs from the largest window to the smallest.
        best = good[-1] if prefer_recent else max(good, key=lambda f: (f[1], f[0]))
    if best is None:
        raise TrainingError(
            "no training window has two classes and a usable feature "
            f"({cut} rows before the holdout)"
        )
    window, accuracy, pipeline = best
    return TrainedModel(
        pipeline=pipeline,
        accuracy=accuracy,
        training_rows=window,
        holdout_rows=len(holdout_y),
        window=window,
        windows_tried=tried,
        feature_kinds=kinds,
        seconds=time.perf_counter() - started,
        holdout_features=holdout_x,
        holdout_labels=holdout_y,
    )


def _fit_windows(kinds, estimator, train_x, train_y, holdout_x, holdout_y, cut, windows):
    """Fit one pipeline per window (the newest ``window`` rows before the
    holdout); return (window, holdout accuracy, pipeline) for each."""
    fitted = []
    for window in windows:
        window_y = train_y[cut - window:]
        if len(set(window_y)) < 2:
            continue  # a recent window with one class cannot be fitted
        pipeline = make_pipeline(kinds, estimator)
        try:
            pipeline.fit(train_x.iloc[cut - window:], window_y)
        except NoUsableFeatures:
            continue
        accuracy = float(np.mean(pipeline.predict(holdout_x) == holdout_y))
        fitted.append((window, accuracy, pipeline))
    return fitted


def score(pipeline, features: pd.DataFrame, labels: np.ndarray) -> float:
    """Accuracy of any fitted pipeline (e.g. the champion) on a holdout."""
    predictions = np.asarray(pipeline.predict(features), dtype=object)
    return float(np.mean(predictions.astype(str) == labels.astype(str)))
