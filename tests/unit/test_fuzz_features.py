"""Fuzzed features through training and the champion (issue 14, part 5).

Feature objects as the database hands them to the worker (json.loads of a
flat jsonb object): mixed types per column, all-null columns, booleans,
numbers beyond double precision (jsonb's 1e400 comes back as a 401-digit
int, 1e-400 as 0.0), unicode and very long keys, empty objects. Through
``worker.training.train`` they either train or raise TrainingError with a
readable one-line message, never another exception; a trained pipeline (what
becomes the champion) predicts one known label per row on rows of any other
shape, and never raises.
"""

from __future__ import annotations

import random
import warnings

import pandas as pd
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz_strategies import feature_keys, fuzz, hostile_text, json_numbers
from worker.training import TrainingData, TrainingError, train

#: Column kinds the generator mixes; each column of a data set is one.
KINDS = ["number", "integer", "string", "boolean", "null", "mixed", "huge", "tiny", "sparse"]

#: Numbers at the edges: beyond double precision (jsonb's 1e400 arrives as a
#: 401-digit int), finite near its limit, 2**64.
HUGE = [10**400, -(10**400), 1e308, -1.7976931348623157e308, 1e200, 2**64, -(2**63), 1.0]
#: A column of tiny spread: subnormal numbers and zero.
TINY = [5e-324, 1e-320, 1e-160, 2e-160, 0.0, -0.0]
#: Mostly ordinary numbers, sometimes any double or huge int.
NUMBERS = st.one_of(st.floats(-1e6, 1e6), st.integers(-(10**6), 10**6), json_numbers())


def _value(kind: str, rnd, i: int, signal: bool):
    """A value of a column of ``kind`` for row i; ``signal``: the label's bit."""
    if kind == "number":
        return (1.0 if signal else -1.0) + rnd.random()
    if kind == "integer":
        return int(signal) * 10 + rnd.randint(0, 3)
    if kind == "string":
        return ("red", "e\u0301", "🤖")[int(signal) if rnd.random() < 0.8 else 2]
    if kind == "boolean":
        return signal if rnd.random() < 0.9 else (not signal)
    if kind == "null":
        return None
    if kind == "mixed":
        return rnd.choice([1, "two", None, 3.5, True, "", "4"])
    if kind == "huge":
        return rnd.choice(HUGE)
    if kind == "tiny":
        return rnd.choice(TINY)
    if kind == "sparse":
        return "MISSING" if rnd.random() < 0.7 else rnd.random()
    raise AssertionError(kind)


@st.composite
def training_sets(draw):
    """(features, labels): a data set whose columns each have a kind."""
    n = draw(st.integers(0, 90), label="rows")
    columns = draw(st.one_of(
        st.dictionaries(feature_keys(), st.sampled_from(KINDS), min_size=1, max_size=4),
        st.dictionaries(feature_keys(), st.sampled_from(KINDS), max_size=4)), label="columns")
    classes = draw(st.one_of(
        st.just(["a", "b"]),
        st.sampled_from([["a"], ["yes", "no", "maybe"], ["", "é"], ["1", "2"]])), label="classes")
    seed = draw(st.integers(0, 2**16), label="seed")
    prng = random.Random(seed)
    labels = [prng.choice(classes) for _ in range(n)]
    features = []
    for i, label in enumerate(labels):
        signal = label == classes[0]
        row = {}
        for key, kind in columns.items():
            value = _value(kind, prng, i, signal)
            if value != "MISSING":
                row[key] = value
        features.append(row)
    # Some rows of other shapes: empty, or with a stray value of any type.
    for i in draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=5), label="odd rows"):
        if i < n:
            features[i] = draw(st.one_of(
                st.just({}),
                st.dictionaries(feature_keys(), st.one_of(
                    st.none(), st.booleans(), NUMBERS, hostile_text()), max_size=3)),
                label="odd row")
    return features, labels


def other_rows():
    """Rows the champion may be asked about: any keys, any scalar values."""
    value = st.one_of(st.none(), st.booleans(), NUMBERS, hostile_text(), st.sampled_from(HUGE),
                      st.sampled_from(TINY), st.sampled_from(["red", "ultraviolet", ""]))
    keys = st.one_of(feature_keys(), st.sampled_from(["x", "color"]))
    return st.lists(st.one_of(st.dictionaries(keys, value, min_size=1, max_size=4),
                              st.dictionaries(keys, value, max_size=4)), min_size=1, max_size=6)


def assert_readable(exc: TrainingError) -> None:
    message = str(exc)
    assert message.strip(), "an empty message"
    assert "\n" not in message, f"not one line: {message!r}"
    assert len(message) <= 300, f"too long to read: {message[:100]!r}..."


@fuzz(40)
@given(data=training_sets(),
       estimator=st.sampled_from(["logistic_regression", "hist_gradient_boosting",
                                  "random_forest", "auto"]),
       min_training_rows=st.one_of(st.integers(1, 40), st.just(20)),
       asked=other_rows())
def test_training_trains_or_says_why_and_the_champion_predicts_any_row(
        data, estimator, min_training_rows, asked):
    features, labels = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = train(TrainingData(features, labels, list(range(1, len(labels) + 1))),
                          estimator=estimator, min_training_rows=min_training_rows)
        except TrainingError as exc:
            event(f"TrainingError: {str(exc).split(':')[0].split('(')[0]}")
            assert_readable(exc)
            return
        event("trained")
        classes = set(labels)
        assert 0.0 <= model.accuracy <= 1.0
        for rows in (asked, pd.DataFrame(asked)):
            predicted = list(model.pipeline.predict(rows))
            assert len(predicted) == len(asked)
            assert {str(p) for p in predicted} <= classes


@pytest.mark.parametrize("rows", [[{}] * 60, [{"n": None}] * 60, [{"n": None}, {}] * 30])
def test_no_usable_feature_is_a_training_error(rows):
    labels = ["a", "b"] * 30
    with pytest.raises(TrainingError) as err:
        train(TrainingData(rows, labels, list(range(1, 61))), estimator="logistic_regression")
    assert_readable(err.value)


# -----------------------------------------------------------------------------
# Bugs the fuzzing found in worker/training.py and worker/features.py, fixed
# in db1285d: each a minimal case, kept as a regression test.

def rule_data(n=200, seed=0):
    rnd = random.Random(seed)
    labels = [rnd.choice("ab") for _ in range(n)]
    features = [{"x": (1.0 if label == "a" else -1.0) + rnd.random()} for label in labels]
    return features, labels


def trains_or_says_why(features, labels, **options):
    """train(); a TrainingError is fine, anything else is the symptom."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return train(TrainingData(features, labels, list(range(1, len(labels) + 1))),
                         **options)
        except TrainingError:
            return None
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


@pytest.mark.parametrize("case", ["a label seen once", "a small window"])
def test_gradient_boosting_trains_on_a_label_seen_once_or_a_small_window(case):
    if case == "a label seen once":
        features, labels = rule_data(300, seed=1)
        labels[5] = "c"
        trains_or_says_why(features, labels, estimator="hist_gradient_boosting")
    else:
        features = [{"x": float(i)} for i in range(12)]
        trains_or_says_why(features, ["a", "b"] * 6, estimator="hist_gradient_boosting",
                           min_training_rows=10)


@pytest.mark.parametrize("estimator", ["logistic_regression", "random_forest",
                                       "hist_gradient_boosting"])
def test_huge_finite_numbers_do_not_crash_training(estimator):
    features, labels = rule_data()
    for i, row in enumerate(features):
        row["outlier"] = 1e200 if i % 7 == 0 else 1.0
    trains_or_says_why(features, labels, estimator=estimator)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_random_forest_champion_predicts_rows_with_huge_numbers():
    features, labels = rule_data()
    model = trains_or_says_why(features, labels, estimator="random_forest")
    assert model is not None
    try:
        predicted = model.pipeline.predict(pd.DataFrame([{"x": 1e39}, {"x": 1.5}]))
    except ValueError as exc:
        raise AssertionError(str(exc)) from exc
    assert len(predicted) == 2


def test_the_champion_predicts_a_batch_of_empty_feature_objects():
    features, labels = rule_data()
    model = trains_or_says_why(features, labels, estimator="logistic_regression")
    assert model is not None
    try:
        predicted = model.pipeline.predict([{}])
    except ValueError as exc:
        raise AssertionError(str(exc)) from exc
    assert len(predicted) == 1
