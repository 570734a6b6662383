"""The demo's stream (worker/demo_data.py) really has what the demo claims:
a concept change (a model of the rule before it scores poorly after it), an
input shift (prices move while the rule holds), mixed feature types and
about 10% label noise; and it is reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from worker import demo_data

BATCHES, SIZE, SEED = 20, 1000, 3


@pytest.fixture(scope="module")
def stream():
    return list(demo_data.stream(BATCHES, SIZE, SEED))


def by_phase(stream, name):
    return [b for b in stream if b.phase.name == name]


def frame(batches) -> tuple[pd.DataFrame, np.ndarray]:
    rows = [f for b in batches for f in b.features]
    x = pd.DataFrame.from_records(rows)
    x = pd.get_dummies(x, columns=["channel"], dtype=float)
    x["member"] = x["member"].astype(float)
    return x, np.array([y for b in batches for y in b.labels])


def fit(batches):
    x, y = frame(batches)
    return HistGradientBoostingClassifier(random_state=0).fit(x, y), list(x.columns)


def score(model, columns, batches) -> float:
    x, y = frame(batches)
    return float((model.predict(x.reindex(columns=columns, fill_value=0.0)) == y).mean())


def test_three_phases_in_order_covering_every_batch():
    phases = demo_data.phases(40)
    assert [p.name for p in phases] == ["stable", "concept change", "input shift"]
    assert phases[0].first_batch == 1 and phases[-1].last_batch == 40
    for before, after in zip(phases, phases[1:]):
        assert after.first_batch == before.last_batch + 1
    # The smallest run still has one batch of each.
    assert [(p.first_batch, p.last_batch) for p in demo_data.phases(3)] == [(1, 1), (2, 2), (3, 3)]
    with pytest.raises(ValueError):
        demo_data.phases(2)


def test_features_are_mixed_numbers_strings_and_booleans(stream):
    row = stream[0].features[0]
    assert set(row) == {"price", "wait_days", "rating", "channel", "member"}
    assert isinstance(row["price"], float) and isinstance(row["channel"], str)
    assert isinstance(row["member"], bool)
    assert {f["channel"] for b in stream for f in b.features} == set(demo_data.CHANNELS)
    assert all(len(b.features) == len(b.labels) == SIZE for b in stream)


def test_about_ten_percent_of_the_labels_are_noise(stream):
    flipped = np.mean([y != c for b in stream for y, c in zip(b.labels, b.clean_labels)])
    assert 0.08 < flipped < 0.12


def test_the_concept_changes_a_model_of_the_old_rule_scores_poorly_after_it(stream):
    stable, changed = by_phase(stream, "stable"), by_phase(stream, "concept change")
    model, columns = fit(stable[:-1])
    before = score(model, columns, stable[-1:])
    after = score(model, columns, changed)
    assert before > 0.85  # near the noise ceiling of 0.90
    assert after < before - 0.12, (before, after)
    # The inputs did not move: the change is in the labels only.
    prices = lambda batches: np.mean([f["price"] for b in batches for f in b.features])  # noqa: E731
    assert abs(prices(stable) - prices(changed)) < 0.2
    # A model of the new rule learns it back.
    relearned, columns = fit(changed[:-1])
    assert score(relearned, columns, changed[-1:]) > 0.85


def test_the_inputs_shift_while_the_rule_holds(stream):
    changed, shifted = by_phase(stream, "concept change"), by_phase(stream, "input shift")
    price = lambda batches: np.array([f["price"] for b in batches for f in b.features])  # noqa: E731
    assert price(changed).mean() == pytest.approx(5.0, abs=0.2)
    assert price(shifted).mean() == pytest.approx(3.0, abs=0.2)
    assert price(shifted).max() <= 6.0
    # The same rule labels both phases (before the noise).
    for batch in shifted:
        f = pd.DataFrame.from_records(batch.features)
        expected = demo_data.rule(f["price"], f["wait_days"], f["channel"],
                                  demo_data.THRESHOLD_AFTER)
        assert list(np.where(expected, "yes", "no")) == batch.clean_labels
    # So a model of phase 2 still scores well on the shifted inputs.
    model, columns = fit(changed)
    assert score(model, columns, shifted) > 0.8


def test_the_stream_is_reproducible_and_the_seed_matters():
    first = [b.features for b in demo_data.stream(4, 50, 11)]
    again = [b.features for b in demo_data.stream(4, 50, 11)]
    other = [b.features for b in demo_data.stream(4, 50, 12)]
    assert first == again
    assert first != other
    # Any batch can be made alone, the same as in the stream.
    phases = demo_data.phases(4)
    alone = demo_data.make_batch(3, 50, demo_data.phase_of(3, phases), 11)
    assert alone.features == first[2]
