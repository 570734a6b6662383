"""Training on plain data: messy features, failures that name their cause,
the split (choices never see the holdout), the significance rule, change
detection, and the refit that makes the registered model fresh."""

import random

import numpy as np
import pandas as pd
import pytest

from worker import training
from worker.features import CATEGORICAL, NUMERIC, FeatureFrame, coerce, infer_kinds
from worker.training import (TrainingData, TrainingError, challenge, choose, error_change,
                             mcnemar_z, score, train)


def rule_rows(n, seed=0, flip_after=None, noise=0.0, ids=False):
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
    return TrainingData(features, labels, list(range(1, n + 1)) if ids else [])


# --- messy features ------------------------------------------------------

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


@pytest.mark.parametrize("estimator", ["auto", "hist_gradient_boosting", "logistic_regression",
                                       "random_forest"])
def test_trains_with_mixed_types_and_tolerates_unseen_categories(estimator):
    data = rule_rows(400)
    for i, row in enumerate(data.features):
        row["mixed"] = [1, "two", None, 3.5][i % 4]
        row["always_null"] = None
    decision = challenge(data, estimator=estimator)
    assert decision.accuracy > 0.85
    assert "always_null" not in decision.feature_kinds
    unseen = pd.DataFrame.from_records([{"x": 2.0, "color": "ultraviolet", "flag": "maybe"}])
    assert list(decision.pipeline.predict(unseen)) == ["yes"]
    assert list(decision.pipeline.predict([{"x": -2.0, "surprise": [1]}])) == ["no"]


def test_numbers_beyond_double_precision_do_not_break_training():
    data = rule_rows(200)
    for i, row in enumerate(data.features):
        row["big"] = 10**400 if i % 5 == 0 else 1.5   # JSON 1e400 arrives as a huge int
    model = train(data)
    assert model.accuracy > 0.85
    assert model.feature_kinds["big"] == NUMERIC


def test_too_few_rows_one_class_and_no_usable_feature_fail_with_a_readable_reason():
    with pytest.raises(TrainingError, match="too few labelled rows: 10"):
        train(rule_rows(10), min_training_rows=50)
    one_class = TrainingData([{"x": i} for i in range(100)], ["yes"] * 100)
    with pytest.raises(TrainingError, match="only one class"):
        train(one_class)
    empty = TrainingData([{"x": None} for _ in range(100)], ["a", "b"] * 50)
    with pytest.raises(TrainingError, match="no usable feature"):
        train(empty)
    with pytest.raises(TrainingError, match="unknown estimator"):
        train(rule_rows(100), estimator="svm")


def test_score_compares_as_strings():
    class Constant:
        def predict(self, frame):
            return np.array([1] * len(frame))
    assert score(Constant(), pd.DataFrame({"x": [1, 2]}), np.array(["1", "2"], dtype=object)) == 0.5


# --- the split: choices never see the holdout ------------------------------

def test_no_choice_is_fitted_or_judged_on_the_holdout(monkeypatch):
    data = rule_rows(3000, seed=3, noise=0.1)
    data.predictions = ["yes" if row["x"] > 0 else "no" for row in data.features]
    fits, judged = [], []
    real_fit, real_correct = training._fit, training._correct
    monkeypatch.setattr(training, "_fit", lambda k, e, x, y: (fits.append(x.index), real_fit(k, e, x, y))[1])
    monkeypatch.setattr(training, "_correct", lambda p, x, y: (judged.append(x.index), real_correct(p, x, y))[1])

    model = train(data, estimator="auto")
    split = model.split
    assert split.holdout_start == 3000 - 600 and split.valid_start == 2400 - 480
    *choices, decision = fits
    assert len(choices) == 6                          # 3 windows x 2 estimators
    assert all(index.max() < split.valid_start for index in choices)
    assert decision.min() == model.start and decision.max() == split.holdout_start - 1
    *validations, holdout = judged
    assert all(index.min() == split.valid_start and index.max() == split.holdout_start - 1
               for index in validations)
    assert holdout.min() == split.holdout_start


@pytest.mark.parametrize("window", [None, 3000])
def test_what_the_holdout_says_changes_the_accuracy_but_no_choice(window):
    # The data window's start comes from the champion's (served) errors,
    # which include the newest rows; everything chosen among challengers is
    # chosen on V. So: flip every holdout label, and the served prediction
    # with it (the champion is as wrong there as before): the accuracy
    # changes, no choice does.
    data = rule_rows(3000, seed=4, noise=0.1, ids=True)
    data.predictions = ["yes" if row["x"] > 0.1 else "no" for row in data.features]
    first = train(data, estimator="auto", training_window=window)
    flip = {"yes": "no", "no": "yes"}
    hs = first.split.holdout_start
    labels = data.labels[:hs] + [flip[y] for y in data.labels[hs:]]
    predictions = data.predictions[:hs] + [flip[p] for p in data.predictions[hs:]]
    second = train(TrainingData(data.features, labels, data.row_ids, predictions),
                   estimator="auto", training_window=window)
    assert (second.split, second.start, second.estimator, second.windows_tried) == \
        (first.split, first.start, first.estimator, first.windows_tried)
    assert second.accuracy < 0.2 < 0.8 < first.accuracy


# --- the window: significance, change detection, memory --------------------

def test_another_choice_needs_to_be_significantly_better_than_the_default():
    rng = np.random.default_rng(0)
    default = rng.random(200) < 0.85
    slightly = default.copy()
    slightly[np.flatnonzero(~default)[:4]] = True      # 4 more right: noise
    clearly = default.copy()
    clearly[np.flatnonzero(~default)[:20]] = True      # 20 more right
    correct = {"big": default, "small": slightly}
    assert mcnemar_z(slightly, default) == pytest.approx(2.0)
    assert choose("big", ["big", "small"], correct) == "big"
    correct["smaller"] = clearly
    assert choose("big", ["big", "small", "smaller"], correct) == "smaller"
    assert mcnemar_z(default, default) == 0.0


def test_stationary_data_keeps_the_whole_window():
    model = train(rule_rows(4000, seed=5, noise=0.1), estimator="logistic_regression")
    assert model.start == 0 and model.window == model.split.window


def test_error_change_finds_a_rise_and_ignores_noise():
    rng = np.random.default_rng(1)
    noise = (rng.random(20000) < 0.12).astype(float)
    assert error_change(noise) is None
    assert error_change(noise, since=19000) is None
    rise = np.concatenate([noise[:19000], (rng.random(1000) < 0.4).astype(float)])
    assert 900 <= error_change(rise) <= 1200
    assert 900 <= error_change(rise, since=18500) <= 1100
    rise[:5000] = np.nan                                # rows without a prediction
    assert 900 <= error_change(rise) <= 1200


def test_served_errors_cut_the_window_at_a_concept_change():
    # 4000 rows of one concept, then 500 where the label flipped; the served
    # predictions came from a model of the old concept.
    data = rule_rows(4500, seed=6, flip_after=4000, noise=0.05, ids=True)
    data.predictions = ["yes" if row["x"] > 0 else "no" for row in data.features]
    decision = challenge(data, estimator="auto")
    split = decision.trained.split
    assert 400 <= split.error_change <= 650
    assert split.n - split.start == split.error_change
    new_concept = pd.DataFrame.from_records([{"x": 1.5}, {"x": -1.5}])
    assert list(decision.pipeline.predict(new_concept)) == ["no", "yes"]
    # Without any prediction, a backtest (a model fitted before the newest
    # rows, predicting them) finds it too.
    data.predictions = None
    assert 400 <= challenge(data, estimator="auto").trained.split.error_change <= 650


def test_the_champions_window_is_the_default_and_its_predictions_fill_gaps():
    data = rule_rows(6000, seed=7, flip_after=3000, noise=0.05, ids=True)
    first = challenge(TrainingData(data.features[:3500], data.labels[:3500],
                                   data.row_ids[:3500],
                                   ["yes" if r["x"] > 0 else "no" for r in data.features[:3500]]),
                      estimator="logistic_regression")
    assert getattr(first.pipeline, training.WINDOW_ATTRIBUTE) == \
        (data.row_ids[first.trained.start], 3500)
    assert 2800 <= first.trained.start <= 3100       # where the concept changed
    # No served predictions at all: the champion's, on the rows it never saw,
    # show no change since its window, which stays the start.
    later = challenge(data, first.pipeline, estimator="logistic_regression")
    assert later.trained.split.error_change is None
    assert later.trained.split.start == first.trained.start


# --- fresh: the registered model learned from the newest rows --------------

def test_the_registered_model_is_refit_through_the_newest_row():
    # Old rows cover x in [-3, 0]; the newest 120 rows, all in the holdout,
    # are the first from x in [2, 4] and say "no" where the old rule says "yes".
    rng = random.Random(8)
    features, labels = [], []
    for _ in range(880):
        x = rng.uniform(-3, 0)
        features.append({"x": x})
        labels.append("yes" if x > -1.5 else "no")
    for _ in range(120):
        features.append({"x": rng.uniform(2, 4)})
        labels.append("no")
    data = TrainingData(features, labels, list(range(101, 1101)))
    # A fixed window (policy training_window): no detection moves the split.
    decision = challenge(data, estimator="hist_gradient_boosting", training_window=1000)
    far = pd.DataFrame.from_records([{"x": 3.0}])
    assert decision.trained.split.holdout_start == 800
    assert list(decision.trained.pipeline.predict(far)) == ["yes"]   # the decision model
    assert decision.promoted and decision.refit
    assert list(decision.pipeline.predict(far)) == ["no"]            # what is registered
    assert decision.rows_used == 1000 and decision.trained_through_id(data) == 1100
    assert len(decision.baseline_rows(data)) == 1000


def test_a_champion_that_wins_is_kept_and_nothing_is_refit():
    data = rule_rows(1000, seed=9, noise=0.1, ids=True)

    class Perfect:
        def predict(self, frame):
            return np.where(frame["x"] > 0, "yes", "no")

    decision = challenge(data, Perfect(), estimator="logistic_regression")
    assert decision.champion_accuracy >= decision.accuracy and not decision.promoted
    assert not decision.refit and decision.pipeline is decision.trained.pipeline
    assert decision.rows_used == decision.trained.training_rows
    assert decision.trained_through_id(data) == decision.trained.split.holdout_start


def test_a_champion_that_cannot_score_loses():
    class Broken:
        def predict(self, frame):
            raise ValueError("boom")

    decision = challenge(rule_rows(500, ids=True), Broken())
    assert decision.champion_accuracy == 0.0 and decision.promoted
    assert "boom" in decision.champion_error


def test_model_names_become_safe_directory_names():
    from worker.tracking import safe_directory_name

    for name in ["/etc/passwd", "..", "../up", "a/b:c", "fraud/eu:v2", ""]:
        encoded = safe_directory_name(name)
        assert "/" not in encoded and encoded not in (".", "..") and encoded
    assert safe_directory_name("churn_v2") == "churn_v2"
    assert safe_directory_name("a/b") != safe_directory_name("a_b")


# --- edges the fuzz tests found (tests/unit/test_fuzz_features.py) --------

@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "auto"])
def test_gradient_boosting_trains_on_a_label_seen_once_and_on_a_tiny_window(estimator):
    data = rule_rows(300, seed=1)
    data.labels[5] = "rare"
    assert challenge(data, estimator=estimator).pipeline is not None
    tiny = TrainingData([{"x": float(i)} for i in range(12)], ["a", "b"] * 6)
    assert challenge(tiny, estimator=estimator, min_training_rows=10).pipeline is not None


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest",
                                       "hist_gradient_boosting"])
def test_huge_finite_numbers_train_and_predict(estimator):
    data = rule_rows(300, seed=2)
    for i, row in enumerate(data.features):
        row["outlier"] = 1e200 if i % 7 == 0 else 1.0
    decision = challenge(data, estimator=estimator)
    assert decision.accuracy > 0.8
    assert len(decision.pipeline.predict(pd.DataFrame([{"x": 1e39, "outlier": 1e300},
                                                       {"x": 1.5}]))) == 2


def test_a_batch_of_empty_feature_objects_gets_one_prediction_per_row():
    decision = challenge(rule_rows(200), estimator="logistic_regression")
    assert len(decision.pipeline.predict([{}])) == 1
    assert len(decision.pipeline.predict([{}, {}, {"x": 1.0}])) == 3


def test_the_baseline_describes_the_window_and_samples_a_long_one_evenly():
    data = rule_rows(1000, seed=10, noise=0.1, ids=True)
    decision = challenge(data, estimator="logistic_regression")
    assert decision.baseline_rows(data) == data.features[decision.trained.start:]
    many = rule_rows(25000, seed=11, noise=0.1, ids=True)
    decision = challenge(many, estimator="logistic_regression")
    rows = decision.baseline_rows(many)
    assert decision.trained.start == 0 and len(rows) == 12500
    assert rows[-1] is many.features[-1] and rows[0] is many.features[1]
