"""One retrain, start to finish: load the rows, train a challenger, score
the champion on the same holdout, decide, refit a promoted challenger on the
newest rows, track it all in MLflow, and return the outcome.

The decision itself (training.challenge) is plain data in, plain data out;
this module adds the database, MLflow and the logs. The database writes of
the outcome happen in claiming.finish_succeeded, in one transaction with the
retrain's model_metrics row and the new drift baseline.
"""

from __future__ import annotations

import io
import json
import logging

import psycopg
from psycopg.rows import dict_row

from . import drift
from .claiming import Event
from .features import JsonRows, frame_from_arrow, frame_from_features
from .queries import query
from .tracking import Tracker
from .training import Decision, TrainingData, challenge

log = logging.getLogger(__name__)

#: Reasons that say the inputs moved: train on where they are now.
DRIFT_REASONS = {"drift_and_accuracy", "drift"}


def load_policy(conn: psycopg.Connection, model_name: str) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query("policy_for"), {"model_name": model_name}).fetchone()


#: The rows of query load_training_rows (sql/queries.sql), in its order
#: (newest first), one JSON object per line:
#: {"i": id, "l": label, "p": prediction, "f": features}. Every value is
#: JSON text, which has no raw control characters, so the only COPY text
#: escape in a line is a doubled backslash. PostgreSQL builds each line by
#: concatenation (features::text is what COPY prints anyway; measured 0.096 s
#: for 50k rows against 0.069 s for the plain columns, and 0.142 s with an
#: ORDER BY id, which is why the client reverses the lines); the client
#: parses all lines in one vectorised call instead of one json.loads per
#: row. Kept here until it moves to sql/queries.sql.
LOAD_ROWS_COPY = """
COPY (
    SELECT concat('{"i":', id, ',"l":', coalesce(to_json(label)::text, 'null'),
                  ',"p":', coalesce(to_json(prediction)::text, 'null'),
                  ',"f":', features::text, '}')
    FROM ({rows}) AS rows
) TO STDOUT
"""

def load_training_data(conn: psycopg.Connection, model_name: str, limit: int) -> TrainingData:
    """The model's newest labelled rows (up to ``limit``), oldest first, with
    the prediction served for each (None where there was none), and the
    features' frame as ``frame_from_features`` would build it."""
    rows = query("load_training_rows").strip().rstrip(";")
    with conn.cursor() as cur:
        with cur.copy(LOAD_ROWS_COPY.replace("{rows}", rows),
                      {"model_name": model_name, "limit": limit}) as copy:
            # One CopyData message per row: each chunk is one line.
            lines = [bytes(chunk) for chunk in copy]
    lines.reverse()                                   # oldest first
    return parse_copied_rows(lines)


def parse_copied_rows(lines: list[bytes]) -> TrainingData:
    """TrainingData from the lines (oldest first, each ending in a newline)
    that LOAD_ROWS_COPY prints. Fast path: one pyarrow.json parse of every
    line; exact path (json.loads per line, as psycopg loads jsonb) whenever
    pyarrow cannot promise the same values and types (see
    features.frame_from_arrow), or is not installed."""
    # COPY doubled the backslashes (the only COPY escape in JSON text).
    blob = b"".join(lines).replace(b"\\\\", b"\\")
    fast = _parse_fast(blob)
    if fast is not None:
        ids, labels, predictions, frame = fast
        return TrainingData(features=JsonRows(lines, after=b',"f":', copy_escaped=True),
                            labels=labels, row_ids=ids, predictions=predictions, frame=frame)
    parsed = [json.loads(line.replace(b"\\\\", b"\\")) for line in lines]
    features = [row["f"] for row in parsed]
    return TrainingData(features=features, labels=[row["l"] for row in parsed],
                        row_ids=[row["i"] for row in parsed],
                        predictions=[row["p"] for row in parsed],
                        frame=frame_from_features(features))


def _parse_fast(blob: bytes):
    try:
        import pyarrow as pa
        import pyarrow.json as pj
    except ImportError:
        return None
    if not blob:
        return [], [], [], frame_from_features([])
    schema = pa.schema([("i", pa.int64()), ("l", pa.string()), ("p", pa.string())])
    for attempt in range(2):
        try:
            table = pj.read_json(
                io.BytesIO(blob),
                read_options=pj.ReadOptions(use_threads=False, block_size=1 << 22),
                parse_options=pj.ParseOptions(explicit_schema=schema,
                                              unexpected_field_behavior="infer"))
        except pa.ArrowInvalid:
            return None   # e.g. a feature with numbers and strings
        struct = table.column("f").combine_chunks()
        frame = frame_from_arrow(struct)
        if frame is not None:
            return (table.column("i").to_pylist(), table.column("l").to_pylist(),
                    table.column("p").to_pylist(), frame)
        if attempt or not any(_temporal(f.type) for f in struct.type):
            return None
        # pyarrow reads strings that look like timestamps as timestamps:
        # read those features again as the strings they are.
        fields = [pa.field(f.name, pa.string() if _temporal(f.type) else f.type)
                  for f in struct.type]
        schema = schema.append(pa.field("f", pa.struct(fields)))
    return None


def _temporal(t) -> bool:
    import pyarrow as pa

    return pa.types.is_temporal(t)


def retrain(conn: psycopg.Connection, tracker: Tracker, event: Event,
            still_ours=lambda: None) -> dict:
    """Train a challenger for the event's model and decide on promotion.
    Returns the outcome for claiming.finish_succeeded. ``still_ours`` raises
    when the event was taken over; it is called before MLflow is written."""
    policy = load_policy(conn, event.model_name)
    data = load_training_data(conn, event.model_name, policy["max_training_rows"])
    log.info("event %s: loaded %d labelled rows of model %s",
             event.id, len(data), event.model_name)

    champion, champion_version = tracker.load_champion(event.model_name)
    decision = challenge(
        data, champion,
        estimator=policy["estimator"],
        min_training_rows=policy["min_training_rows"],
        holdout_fraction=policy["holdout_fraction"],
        training_window=policy["training_window"],
        drift_threshold=policy["drift_threshold"],
        prefer_recent=bool(DRIFT_REASONS & set(event.reasons)),
    )
    trained = decision.trained
    split = trained.split
    log.info("event %s: data window %d rows (%s), holdout %d, validation %d; chose %s on "
             "%d rows (tried: %s); holdout accuracy %.4f",
             event.id, split.n - split.start, _window_cause(decision), trained.holdout_rows,
             split.holdout_start - split.valid_start, trained.estimator, trained.window,
             ", ".join(f"{k}={v:.3f}" for k, v in trained.windows_tried.items()),
             trained.accuracy)
    if decision.champion_error:
        log.warning("event %s: champion version %s cannot score the holdout: %s",
                    event.id, champion_version, decision.champion_error)

    still_ours()
    trained_through_id = decision.trained_through_id(data)
    run_id, version = tracker.log_retrain(
        model_name=event.model_name,
        params=_params(event, policy, data, decision, champion_version, trained_through_id),
        metrics={
            "model_accuracy": decision.accuracy,
            "champion_accuracy": decision.champion_accuracy,
            "validation_accuracy": trained.validation_accuracy,
            "holdout_rows": trained.holdout_rows,
            "training_rows": trained.training_rows,
            "registered_rows": decision.rows_used,
            "train_seconds": decision.seconds,
        },
        pipeline=decision.pipeline,
        input_example=trained.holdout_features.head(5),
        promoted=decision.promoted,
    )
    if decision.champion_accuracy is None:
        verdict = "promoted: first champion"
    elif decision.promoted:
        verdict = (f"promoted over champion version {champion_version} "
                   f"({decision.champion_accuracy:.4f})")
    else:
        verdict = (f"not promoted: champion version {champion_version} scores "
                   f"{decision.champion_accuracy:.4f}")
    log.info("event %s: model %s version %s accuracy %.4f, %s; registered after learning "
             "from %d rows through id %s%s",
             event.id, event.model_name, version, decision.accuracy, verdict,
             decision.rows_used, trained_through_id,
             " (refit with the holdout)" if decision.refit else "")

    # The drift baseline describes where the inputs are now: the chosen
    # window through the newest row.
    rows = decision.baseline_rows(data)
    return {
        "baseline": drift.baseline(rows, decision.feature_kinds),
        "baseline_rows": len(rows),
        "mlflow_run_id": run_id,
        "model_version": version,
        "accuracy": decision.accuracy,
        "champion_accuracy": decision.champion_accuracy,
        "promoted": decision.promoted,
        "rows_used": decision.rows_used,
        "holdout_rows": trained.holdout_rows,
        "training_window": trained.window,
        "trained_through_id": trained_through_id,
    }


def _window_cause(decision: Decision) -> str:
    split = decision.trained.split
    if split.input_change is not None and split.input_change == split.n - split.start:
        return "the inputs moved then"
    if split.error_change is not None and split.error_change == split.n - split.start:
        return "the served predictions' errors rose then"
    if split.start == 0:
        return "every row loaded"
    return "the champion's window"


def _params(event, policy, data, decision: Decision, champion_version, trained_through_id):
    trained = decision.trained
    split = trained.split
    return {
        "event_id": event.id,
        "reasons": ",".join(event.reasons),
        "estimator": policy["estimator"],
        "estimator_chosen": trained.estimator,
        "rows_loaded": len(data),
        "training_window": policy["training_window"] or "adaptive",
        "data_window_rows": split.n - split.start,
        "data_window_cause": _window_cause(decision),
        "error_change_rows": split.error_change,
        "input_change_rows": split.input_change,
        "holdout_rows": trained.holdout_rows,
        "validation_rows": split.holdout_start - split.valid_start,
        "window_rows": trained.window,
        "windows_tried": trained.windows_tried,
        "decision_training_rows": trained.training_rows,
        "refit_on_holdout": decision.refit,
        "registered_rows": decision.rows_used,
        "registered_first_id": data.row_ids[trained.start] if data.row_ids else None,
        "trained_through_id": trained_through_id,
        "features": ",".join(sorted(trained.feature_kinds)),
        "champion_version": champion_version or "",
    }
