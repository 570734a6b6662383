"""The champion served as users load it: ``mlflow.pyfunc.load_model(
"models:/<registered name>@champion").predict(df)`` on what ETL really sends.

A real pipeline, trained by worker.training, logged and registered through
the real Tracker in a local SQLite store."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from worker.tracking import CHAMPION, Tracker, registered_name
from worker.training import TrainingData, train

#: Any text is a model name: the registered name and the artifact directory
#: are escaped, and the model must still load back by alias.
MODEL = "shop/churn.v2"


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """(tracker, fitted pipeline) after one promoted retrain."""
    rnd = random.Random(7)
    features, labels = [], []
    for _ in range(240):
        x = rnd.uniform(-1, 1)
        features.append({"x": round(x, 4), "color": rnd.choice(["red", "green", "blue"]),
                         "flag": rnd.random() < 0.5})
        labels.append("yes" if x > 0 else "no")
    trained = train(TrainingData(features, labels), estimator="logistic_regression")

    store = tmp_path_factory.mktemp("serving") / "mlflow.db"
    tracker = Tracker(f"sqlite:///{store}")
    run_id, version = tracker.log_retrain(
        model_name=MODEL, params={"estimator": "logistic_regression"},
        metrics={"model_accuracy": trained.accuracy}, pipeline=trained.pipeline,
        input_example=trained.holdout_features.head(5), promoted=True)
    assert version == "1"
    tracker.set_champion(MODEL, version)  # as the worker does once the promotion is recorded
    return tracker, trained.pipeline


#: What ETL sends: integers where floats were learned, missing feature
#: columns, extra unseen columns, unseen categories, None values.
MESSY_ROWS = [
    {"x": 1, "color": "red", "flag": True},
    {"x": -1},
    {"x": 0.8, "color": "purple", "flag": False, "campaign": "spring"},
    {"x": None, "color": None, "flag": None},
    {"x": -0.6, "color": 3, "flag": "yes"},
    {"campaign": "nothing the model knows"},
]


def load_champion():
    import mlflow

    return mlflow.pyfunc.load_model(f"models:/{registered_name(MODEL)}@{CHAMPION}")


def test_the_champion_predicts_on_messy_rows(champion):
    _, pipeline = champion
    served = load_champion()

    frame = pd.DataFrame.from_records(MESSY_ROWS)
    predictions = list(served.predict(frame))
    assert predictions == list(pipeline.predict(frame))
    assert predictions[0] == "yes" and predictions[1] == "no" and predictions[2] == "yes"
    assert set(predictions) <= {"yes", "no"}

    # Row by row, each frame holding only that row's own columns.
    for row in MESSY_ROWS:
        one = pd.DataFrame([row])
        assert list(served.predict(one)) == list(pipeline.predict(one)), row
    # Integer columns keep their integer dtype on the way in.
    ints = pd.DataFrame({"x": np.array([1, -1], dtype="int64"), "color": ["red", "blue"]})
    assert list(served.predict(ints)) == ["yes", "no"]


def test_the_worker_loads_the_champion_back(champion):
    tracker, pipeline = champion
    loaded, version = tracker.load_champion(MODEL)
    assert str(version) == "1"
    frame = pd.DataFrame.from_records(MESSY_ROWS)
    assert list(loaded.predict(frame)) == list(pipeline.predict(frame))


def test_the_logged_model_documents_its_input_without_enforcing_it(champion):
    from mlflow.models import Model

    tracker, _ = champion
    version = tracker.client.get_model_version_by_alias(registered_name(MODEL), CHAMPION)
    info = Model.load(f"models:/{registered_name(MODEL)}/{version.version}")
    assert info.signature is None
    assert info.saved_input_example_info is not None
    assert info.metadata == {"feature_kinds": {"x": "numeric", "color": "categorical",
                                               "flag": "categorical"}}
