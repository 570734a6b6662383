"""What a drift refresh costs, with few and with many older rows.

Two databases hold one model each with a stored baseline; one also holds
10k older rows, the other 1M. Each repetition inserts the same N new rows
into both (COPY, triggers on) and times `SELECT * FROM refresh_drift('m')`
on each, interleaved. The refresh reads the model's window (its newest
drift_window rows since the baseline, 1000 by default): its cost should
follow the window, whatever the size of training_data.

    python bench/drift_refresh.py [--new-rows 5000] [--reps 5] [--small 10000] [--large 1000000]

Uses DATABASE_URL when set (scratch databases are created and dropped),
else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from worker import drift, embedded, migrate  # noqa: E402
from worker.db import libpq_url  # noqa: E402
from worker.features import frame_from_features, infer_kinds  # noqa: E402

# Older rows are generated in SQL (fast); new rows in Python, same shape.
OLDER_ROWS_SQL = """
INSERT INTO training_data (model_name, features, label, prediction)
SELECT 'm', jsonb_build_object(
           'x', round((random() * 4 - 2)::numeric, 3),
           'y', round((random() * 100)::numeric, 1),
           'n', (random() * 10)::int,
           'color', (ARRAY['red', 'green', 'blue'])[1 + (random() * 2.99)::int],
           'flag', random() < 0.5),
       'a', 'a'
FROM generate_series(1, %s)
"""


def new_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"x": round(rng.uniform(-2, 2), 3), "y": round(rng.uniform(0, 100), 1),
             "n": rng.randint(0, 10), "color": rng.choice(["red", "green", "blue"]),
             "flag": rng.random() < 0.5} for _ in range(n)]


def create_db(server_url: str) -> tuple[str, str]:
    name = f"pgretrain_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_db(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def prepare(url: str, older: int) -> None:
    migrate.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE retrain_policies SET enabled = false, schedule_interval = NULL, "
                     "drift_min_rows = 1 WHERE model_name = 'default'")
        print(f"  inserting {older} older rows", file=sys.stderr, flush=True)
        conn.execute("ALTER TABLE training_data DISABLE TRIGGER USER")
        conn.execute(OLDER_ROWS_SQL, (older,))
        conn.execute("ALTER TABLE training_data ENABLE TRIGGER USER")
        conn.execute("VACUUM ANALYZE training_data")
        sample = [r[0] for r in conn.execute(
            "SELECT features FROM training_data ORDER BY id DESC LIMIT 5000").fetchall()]
        kinds = infer_kinds(frame_from_features(sample))
        features = [dataclasses.asdict(f) for f in drift.baseline(sample, kinds)]
        newest = conn.execute("SELECT max(id) FROM training_data").fetchone()[0]
        conn.execute("SELECT store_drift_baseline('m', '1', NULL, %s, %s, %s)",
                     (len(sample), newest, Jsonb(features)))


def load_and_refresh(url: str, rows: list[dict]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(
                "COPY training_data (model_name, features, label, prediction) FROM STDIN") as copy:
            for features in rows:
                copy.write_row(("m", json.dumps(features), "a", "a"))
        # The work, not just the time: rows the refresh read from
        # training_data (pg_stat_xact_* counts this backend's accesses not yet
        # flushed to the statistics: flush what came before first).
        conn.execute("SELECT pg_stat_force_next_flush()")
        with conn.transaction():
            started = time.perf_counter()
            result = conn.execute("SELECT window_rows FROM refresh_drift('m')").fetchone()
            window = conn.execute("SELECT drift_window FROM retrain_policy_for('m')").fetchone()[0]
            elapsed = time.perf_counter() - started
            seq_scans, seq_read, idx_fetched = conn.execute(
                "SELECT coalesce(seq_scan, 0), coalesce(seq_tup_read, 0), "
                "coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
                "WHERE relname = 'training_data'").fetchone()
        since = conn.execute("SELECT count(*) FROM training_data AS t, drift_baselines AS d "
                             "WHERE t.id > d.after_row_id").fetchone()[0]
        if result is None or result[0] != min(window, since):
            raise SystemExit(f"error: refresh binned {result} rows, expected {min(window, since)}")
        return elapsed, seq_scans, seq_read, idx_fetched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-rows", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()

    server = None
    if os.environ.get("DATABASE_URL"):
        server_url = libpq_url(os.environ["DATABASE_URL"])
    else:
        server = embedded.start(Path(tempfile.mkdtemp(prefix="pg-retrain-bench-")) / "pgdata",
                                delete_on_exit=True)
        server_url = server.url
    databases = []
    try:
        sizes = {}
        for older in (args.small, args.large):
            name, url = create_db(server_url)
            databases.append(name)
            print(f"preparing a database with {older} older rows", file=sys.stderr, flush=True)
            prepare(url, older)
            sizes[older] = url
        timings = {older: [] for older in sizes}
        work = {}
        for rep in range(args.reps):
            rows = new_rows(args.new_rows, seed=rep)
            order = list(sizes) if rep % 2 == 0 else list(reversed(sizes))
            for older in order:
                elapsed, *work[older] = load_and_refresh(sizes[older], rows)
                timings[older].append(elapsed)
            print(f"rep {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
        with psycopg.connect(server_url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        print(f"PostgreSQL {version}; refresh_drift('m') after COPY of {args.new_rows} new rows "
              f"(5 features, window 1000), {args.reps} reps, medians")
        print(f"{'older rows':>12} {'refresh ms':>11} {'seq scans':>10} "
              f"{'rows read by key':>17}   all reps (ms)")
        medians = {}
        for older, values in timings.items():
            medians[older] = statistics.median(values)
            seq_scans, seq_read, idx_fetched = work[older]
            print(f"{older:>12} {medians[older] * 1000:>11.1f} {seq_scans:>10} "
                  f"{idx_fetched:>17}   " + " ".join(f"{v * 1000:.0f}" for v in values))
        print(f"ratio large/small: {medians[args.large] / medians[args.small]:.2f}x")
        return 0
    finally:
        for name in databases:
            drop_db(server_url, name)
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
