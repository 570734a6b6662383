"""One retrain, start to finish: load the rows, train, compare with the
champion on the same holdout, track in MLflow, return the outcome.

The database writes of the outcome happen in claiming.finish_succeeded, in
one transaction with the retrain's model_metrics row.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import dict_row

from . import drift
from .claiming import Event
from .db import one_line
from .queries import query
from .tracking import Tracker
from .training import TrainingData, score, train

log = logging.getLogger(__name__)

#: Reasons that say the inputs moved: train on where they are now.
DRIFT_REASONS = {"drift_and_accuracy", "drift"}


def load_policy(conn: psycopg.Connection, model_name: str) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query("policy_for"), {"model_name": model_name}).fetchone()


def load_training_data(conn: psycopg.Connection, model_name: str, limit: int) -> TrainingData:
    """The model's newest labelled rows (up to ``limit``), oldest first."""
    rows = conn.execute(query("load_training_rows"),
                        {"model_name": model_name, "limit": limit}).fetchall()
    rows.reverse()
    return TrainingData(
        features=[r[1] for r in rows],
        labels=[r[2] for r in rows],
        row_ids=[r[0] for r in rows],
    )


def retrain(conn: psycopg.Connection, tracker: Tracker, event: Event,
            still_ours=lambda: None) -> dict:
    """Train a challenger for the event's model and decide on promotion.
    Returns the outcome columns for retrain_events. ``still_ours`` raises
    when the event was taken over; it is called before MLflow is written."""
    policy = load_policy(conn, event.model_name)
    data = load_training_data(conn, event.model_name, policy["max_training_rows"])
    log.info("event %s: loaded %d labelled rows of model %s",
             event.id, len(data), event.model_name)

    trained = train(
        data,
        estimator=policy["estimator"],
        min_training_rows=policy["min_training_rows"],
        holdout_fraction=policy["holdout_fraction"],
        training_window=policy["training_window"],
        prefer_recent=bool(DRIFT_REASONS & set(event.reasons)),
    )
    log.info("event %s: trained %s on the newest %d rows in %.1fs (windows tried: %s); "
             "holdout accuracy %.4f on %d rows",
             event.id, policy["estimator"], trained.training_rows, trained.seconds,
             ", ".join(f"{w}={a:.3f}" for w, a in trained.windows_tried.items()),
             trained.accuracy, trained.holdout_rows)

    champion, champion_version = tracker.load_champion(event.model_name)
    champion_accuracy = None
    if champion is not None:
        try:
            champion_accuracy = score(champion, trained.holdout_features, trained.holdout_labels)
        except Exception as exc:  # a champion that cannot score this data loses
            log.warning("event %s: champion version %s cannot score the holdout: %s",
                        event.id, champion_version, one_line(exc))
            champion_accuracy = 0.0
    promoted = champion_accuracy is None or trained.accuracy >= champion_accuracy

    still_ours()
    run_id, version = tracker.log_retrain(
        model_name=event.model_name,
        params={
            "event_id": event.id,
            "reasons": ",".join(event.reasons),
            "estimator": policy["estimator"],
            "rows_loaded": len(data),
            "training_rows": trained.training_rows,
            "holdout_rows": trained.holdout_rows,
            "training_window": policy["training_window"] or "adaptive",
            "windows_tried": trained.windows_tried,
            "features": ",".join(sorted(trained.feature_kinds)),
            "champion_version": champion_version or "",
        },
        metrics={
            "model_accuracy": trained.accuracy,
            "champion_accuracy": champion_accuracy,
            "training_rows": trained.training_rows,
            "holdout_rows": trained.holdout_rows,
            "train_seconds": trained.seconds,
        },
        pipeline=trained.pipeline,
        input_example=trained.holdout_features.head(5),
        promoted=promoted,
    )
    if champion_accuracy is None:
        verdict = "promoted: first champion"
    elif promoted:
        verdict = f"promoted over champion version {champion_version} ({champion_accuracy:.4f})"
    else:
        verdict = f"not promoted: champion version {champion_version} scores {champion_accuracy:.4f}"
    log.info("event %s: model %s version %s accuracy %.4f, %s",
             event.id, event.model_name, version, trained.accuracy, verdict)
    # The drift baseline describes the data the model was trained for: its
    # training window and the holdout, the newest rows.
    used = data.features[len(data) - (trained.training_rows + trained.holdout_rows):]
    baseline = drift.baseline(used, trained.feature_kinds)
    return {
        "baseline": baseline,
        "baseline_rows": len(used),
        "mlflow_run_id": run_id,
        "model_version": version,
        "accuracy": trained.accuracy,
        "champion_accuracy": champion_accuracy,
        "promoted": promoted,
        "rows_used": trained.training_rows + trained.holdout_rows,
    }
