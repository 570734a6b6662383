"""What loading a retrain's rows into pandas costs, against a raw COPY.

Creates a scratch database with its own ``training_data`` table (id,
model_name, features jsonb, label, prediction, created_at), fills it with
N rows of nine features (numbers, integers, strings with non-ASCII
characters and backslashes, a boolean, some JSON nulls and absent keys),
then times, interleaved, the median of REPS runs of:

- ``copy``:   ``COPY (load_training_rows) TO STDOUT``, every byte read, no parsing;
- ``before``: the loader before issue 12 (fetchall, psycopg's json.loads per
  row, frame_from_features);
- ``now``:    worker.retrain.load_training_data (the same COPY, its columns
  split by pyarrow's CSV reader and every features object parsed by one
  pyarrow JSON read, features.frame_from_arrow), which should stay within
  2x ``copy``.

Both loaders' frames, ids, labels and predictions are compared (values and
dtypes; a missing value may be None or NaN in object columns).

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python bench/load_rows.py [--rows 50000] [--reps 7]

The scratch database pgretrain_load_<random> is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from worker.features import frame_from_features  # noqa: E402
from worker.queries import query  # noqa: E402
from worker.retrain import load_training_data  # noqa: E402

MODEL = "bench"

TABLE = """
CREATE TABLE training_data (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name  text NOT NULL DEFAULT 'default',
    features    jsonb NOT NULL,
    label       text,
    prediction  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX training_data_model_id_idx ON training_data (model_name, id) WHERE label IS NOT NULL;
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def feature_row(rng: random.Random) -> dict:
    row = {
        "amount": round(rng.lognormvariate(3, 1), 2),
        "age": rng.randint(18, 90),
        "score": rng.gauss(0, 1),
        "ratio": round(rng.random(), 4),
        "visits": rng.randint(0, 40),
        "balance": round(rng.uniform(-500, 5000), 2),
        "country": rng.choice(["CH", "DE", "FR", "IT", "Zürich", "São Paulo"]),
        "channel": rng.choice(["web", "app", "shop", "c:\\path", "tab\there"]),
        "vip": rng.random() < 0.2,
    }
    if rng.random() < 0.05:
        row["score"] = None
    if rng.random() < 0.05:
        del row["ratio"]
    if rng.random() < 0.03:
        row["vip"] = None
    return row


def fill(url: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLE)
        with conn.cursor().copy(
                "COPY training_data (model_name, features, label, prediction) FROM STDIN") as copy:
            for _ in range(n):
                label = rng.choice(["yes", "no"])
                prediction = rng.choice(["yes", "no", None])
                copy.write_row((MODEL, json.dumps(feature_row(rng)), label, prediction))
        conn.execute("VACUUM ANALYZE training_data")


def load_before(conn: psycopg.Connection, limit: int):
    """The loader before issue 12: psycopg parses each jsonb with json.loads."""
    rows = conn.execute(query("load_training_rows"),
                        {"model_name": MODEL, "limit": limit}).fetchall()
    rows.reverse()
    features = [r[1] for r in rows]
    return ([r[0] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
            frame_from_features(features))


def copy_raw(conn: psycopg.Connection, limit: int) -> int:
    rows = query("load_training_rows").strip().rstrip(";")
    size = 0
    with conn.cursor().copy(f"COPY ({rows}) TO STDOUT", {"model_name": MODEL, "limit": limit}) as copy:
        for chunk in copy:
            size += len(chunk)
    return size


def same_frames(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal values and dtypes; None and NaN both count as missing."""
    assert list(a.columns) == list(b.columns), (list(a.columns), list(b.columns))
    for column in a.columns:
        x, y = a[column], b[column]
        assert x.dtype == y.dtype, (column, x.dtype, y.dtype)
        if x.dtype == object:
            x, y = x.where(x.notna(), None), y.where(y.notna(), None)
            assert x.tolist() == y.tolist(), column
        else:
            pd.testing.assert_series_equal(x, y, check_exact=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"pgretrain_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        log(f"filling {name} with {args.rows} rows")
        fill(url, args.rows, args.seed)
        with psycopg.connect(url, autocommit=True) as conn:
            ids, labels, predictions, frame = load_before(conn, args.rows)
            now = load_training_data(conn, MODEL, args.rows)
            same_frames(frame, now.frame)
            assert (ids, labels, predictions) == (now.row_ids, now.labels, now.predictions)
            assert now.features[:] == [json.loads(t) for t in
                                       (r[0] for r in conn.execute(
                                           "SELECT features::text FROM training_data ORDER BY id"))]
            log("both loaders agree (frames, ids, labels, predictions, feature objects)")

            cases = {
                "copy": lambda: copy_raw(conn, args.rows),
                "before": lambda: load_before(conn, args.rows),
                "now": lambda: load_training_data(conn, MODEL, args.rows),
            }
            times = {case: [] for case in cases}
            for _ in range(args.reps):
                for case, run in cases.items():
                    started = time.perf_counter()
                    run()
                    times[case].append(time.perf_counter() - started)
        copy = statistics.median(times["copy"])
        print(f"rows={args.rows} reps={args.reps} (median seconds, ratio to copy)")
        print(f"{'case':<8} {'median s':>9} {'min s':>7} {'x copy':>7}")
        for case, ts in times.items():
            median = statistics.median(ts)
            print(f"{case:<8} {median:>9.3f} {min(ts):>7.3f} {median / copy:>7.2f}")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
