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
import re

import psycopg
from psycopg.rows import dict_row

from . import drift
from .claiming import Event
from .features import JsonRows, frame_from_arrow, frame_from_features
from .queries import query
from .tracking import Tracker
from .training import TRAINING_THREADS, Decision, TrainingData, challenge

log = logging.getLogger(__name__)

#: Reasons that say the inputs moved: train on where they are now.
DRIFT_REASONS = {"drift_and_accuracy", "drift"}


def load_policy(conn: psycopg.Connection, model_name: str) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query("policy_for"), {"model_name": model_name}).fetchone()


#: pyarrow parses with threads only where training may use more than one
#: (PG_RETRAIN_TRAINING_THREADS): workers share the machine.
PARSE_THREADS = TRAINING_THREADS > 1


def load_training_data(conn: psycopg.Connection, model_name: str, limit: int) -> TrainingData:
    """The model's newest labelled rows (up to ``limit``), oldest first, with
    the prediction served for each (None where there was none), and the
    features' frame as ``frame_from_features`` would build it.

    The rows come as ``COPY (load_training_rows) TO STDOUT`` prints them
    and are parsed column by column in C (pyarrow's CSV and JSON readers)
    instead of by psycopg, one json.loads per row; see parse_copied_rows."""
    rows = query("load_training_rows").strip().rstrip(";")
    with conn.cursor() as cur:
        with cur.copy(f"COPY ({rows}) TO STDOUT",
                      {"model_name": model_name, "limit": limit}) as copy:
            # One CopyData message per row: each chunk is one line.
            lines = [bytes(chunk) for chunk in copy]
    lines.reverse()                                   # oldest first
    return parse_copied_rows(lines)


def parse_copied_rows(lines: list[bytes]) -> TrainingData:
    """TrainingData from COPY text lines of (id, features, label,
    prediction), oldest first.

    Fast path: pyarrow's CSV reader splits the columns (COPY text escapes
    tabs and newlines inside values, so raw ones only separate them; NULL is
    \\N), and its JSON reader parses every features object at once (jsonb
    text has no raw control characters, so its only COPY escape is a doubled
    backslash). Exact path (json.loads per row, as psycopg loads jsonb)
    whenever pyarrow cannot promise the same values and types (see
    features.frame_from_arrow), or is not installed."""
    fast = _parse_fast(lines) if lines else None
    if fast is not None:
        return fast
    ids, features, labels, predictions = [], [], [], []
    for line in lines:
        i, f, label, prediction = line.rstrip(b"\n").split(b"\t")
        ids.append(int(i))
        features.append(json.loads(f.replace(b"\\\\", b"\\")))
        labels.append(_copy_text(label))
        predictions.append(_copy_text(prediction))
    return TrainingData(features=features, labels=labels, row_ids=ids,
                        predictions=predictions, frame=frame_from_features(features))


_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


def _copy_text(value):
    """A COPY text field as the text it stands for (None for \\N)."""
    if isinstance(value, bytes):
        if value == b"\\N":
            return None
        value = value.decode()
    if value is None or "\\" not in value:
        return value
    return _COPY_ESCAPE.sub(lambda m: _COPY_ESCAPES.get(m.group(1), m.group(1)), value)


def _parse_fast(lines: list[bytes]) -> TrainingData | None:
    try:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    blob = b"".join(lines)
    try:
        table = pcsv.read_csv(
            io.BytesIO(blob),
            read_options=pcsv.ReadOptions(
                column_names=["i", "f", "l", "p"], use_threads=PARSE_THREADS,
                block_size=max(1 << 20, 2 * max(map(len, lines)))),
            parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False,
                                            escape_char=False, double_quote=False),
            convert_options=pcsv.ConvertOptions(
                column_types={"i": pa.int64(), "f": pa.string(), "l": pa.string(),
                              "p": pa.string()},
                null_values=["\\N"], strings_can_be_null=True))
    except pa.ArrowInvalid:
        return None
    texts = table.column("f").combine_chunks()
    # The features' JSON texts are back to back in one buffer: a newline
    # between them makes them JSON lines for one parse.
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[
        texts.offset:texts.offset + len(texts) + 1]
    data = np.frombuffer(texts.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    objects = np.insert(data, offsets[1:-1] - offsets[0], ord("\n")).tobytes()
    objects = objects.replace(b"\\\\", b"\\")
    frame = _features_frame(objects, len(lines))
    if frame is None:
        return None
    labels, predictions = (table.column(c).to_pylist() for c in ("l", "p"))
    for values, column in ((labels, "l"), (predictions, "p")):
        if pc.any(pc.match_substring(table.column(column), "\\")).as_py():
            values[:] = [_copy_text(v) for v in values]
    return TrainingData(features=JsonRows(texts, copy_escaped=True), labels=labels,
                        row_ids=table.column("i").to_pylist(), predictions=predictions,
                        frame=frame)


def _features_frame(objects: bytes, rows: int):
    import pyarrow as pa
    import pyarrow.json as pj

    schema = None
    for attempt in range(2):
        options = pj.ParseOptions() if schema is None else pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="infer")
        try:
            table = pj.read_json(io.BytesIO(objects), parse_options=options,
                                 read_options=pj.ReadOptions(use_threads=PARSE_THREADS))
        except pa.ArrowInvalid:
            return None   # e.g. a feature with numbers and strings
        if table.num_rows != rows:
            return None
        frame = frame_from_arrow(table)
        if frame is not None:
            return frame
        if attempt or not any(pa.types.is_temporal(f.type) for f in table.schema):
            return None
        # pyarrow reads strings that look like timestamps as timestamps:
        # read those features again as the strings they are.
        schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_temporal(f.type)
                                     else f.type) for f in table.schema])
    return None


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
        # The newest row this retrain saw, promoted or not: the error and
        # drift windows start after it. (Through the rows before the holdout,
        # an unpromoted retrain would leave the holdout in the windows, where
        # the champion's old predictions fire the same retrain again.)
        "trained_through_id": data.row_ids[-1] if data.row_ids else None,
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
