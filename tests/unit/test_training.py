"""Training on plain data: messy features, failures that name their cause,
and the adaptive window after a concept change."""

import random

import numpy as np
import pandas as pd
import pytest

from worker.features import CATEGORICAL, NUMERIC, FeatureFrame, coerce, infer_kinds
from worker.training import TrainingData, TrainingError, candidate_windows, score, train


def rule_rows(n, seed=0, flip_after=None, noise=0.0):
    rng = random.Random(seed)
    features, labels = [], []
    for i in range(n):
        x = rng.gauss(0, 1)
        positive = x > 0
        if flip_after is not None and i >= flip_after:
            positive = not positive
        if rng.random() < noise:
            positive = not positive
        features.append({"x": x, "color": rng.choice(["red", "blue"]), "flag": rng.random() < 0.5})
        labels.append("yes" if positive else "no")
    return TrainingData(features, labels)


def test_kinds_are_inferred_by_majority_and_empty_columns_are_dropped():
    frame = pd.DataFrame.from_records([
        {"n": 1, "mixed": 2.5, "s": "a", "b": True, "empty": None},
        {"n": 2, "mixed": "oops", "s": "b", "b": False, "empty": None},
        {"n": 3.5, "mixed": 4, "s": 3, "b": None, "empty": None},
    ])
    kinds = infer_kinds(frame)
    assert kinds == {"n": NUMERIC, "mixed": NUMERIC, "s": CATEGORICAL, "b": CATEGORICAL}
    coerced = coerce(frame, kinds)
    assert np.isnan(coerced.loc[1, "mixed"])          # the string became missing
    assert list(coerced["s"]) == ["a", "b", "3"]      # the number became a category
    assert list(coerced["b"][:2]) == ["true", "false"]
    assert "empty" not in coerced


def test_feature_frame_adds_missing_columns_and_ignores_new_ones():
    step = FeatureFrame({"x": NUMERIC, "c": CATEGORICAL}).fit(pd.DataFrame({"x": [1.0]}))
    out = step.transform(pd.DataFrame.from_records([{"new": 1}]))
    assert list(out.columns) == ["x", "c"] and out.isna().all().all()


def test_trains_with_mixed_types_and_tolerates_unseen_categories():
    data = rule_rows(400)
    for i, row in enumerate(data.features):
        row["mixed"] = [1, "two", None, 3.5][i % 4]
        row["always_null"] = None
    model = train(data)
    assert model.accuracy > 0.85
    assert "always_null" not in model.feature_kinds
    unseen = pd.DataFrame.from_records([{"x": 2.0, "color": "ultraviolet", "flag": "maybe"}])
    assert list(model.pipeline.predict(unseen)) == ["yes"]


def test_too_few_rows_one_class_and_no_usable_feature_fail_with_a_readable_reason():
    with pytest.raises(TrainingError, match="too few labelled rows: 10"):
        train(rule_rows(10), min_training_rows=50)
    one_class = TrainingData([{"x": i} for i in range(100)], ["yes"] * 100)
    with pytest.raises(TrainingError, match="only one class"):
        train(one_class)
    empty = TrainingData([{"x": None} for _ in range(100)], ["a", "b"] * 50)
    with pytest.raises(TrainingError, match="no usable feature"):
        train(empty)


def test_adaptive_window_learns_the_new_concept_after_a_change():
    # 2400 rows of the old concept, then 1000 of the flipped one.
    data = rule_rows(3400, seed=1, flip_after=2400, noise=0.05)
    adaptive = train(data)
    everything = train(data, training_window=10_000)
    assert adaptive.window < everything.window
    assert adaptive.accuracy > 0.85
    assert adaptive.accuracy > everything.accuracy + 0.2


def test_candidate_windows():
    assert candidate_windows(800, 50, None) == [800, 400, 200, 100]
    assert candidate_windows(120, 50, None) == [120, 60, 50]
    assert candidate_windows(800, 50, 300) == [300]


def test_score_compares_as_strings():
    class Constant:
        def predict(self, frame):
            return np.array([1] * len(frame))
    assert score(Constant(), pd.DataFrame({"x": [1, 2]}), np.array(["1", "2"], dtype=object)) == 0.5


def test_numbers_beyond_double_precision_do_not_break_training():
    data = rule_rows(200)
    for i, row in enumerate(data.features):
        row["big"] = 10**400 if i % 5 == 0 else 1.5   # JSON 1e400 arrives as a huge int
    model = train(data)
    assert model.accuracy > 0.85
    assert model.feature_kinds["big"] == NUMERIC


def test_model_names_become_safe_directory_names():
    from worker.tracking import safe_directory_name

    for name in ["/etc/passwd", "..", "../up", "a/b:c", "fraud/eu:v2", ""]:
        encoded = safe_directory_name(name)
        assert "/" not in encoded and encoded not in (".", "..") and encoded
    assert safe_directory_name("churn_v2") == "churn_v2"
    assert safe_directory_name("a/b") != safe_directory_name("a_b")
