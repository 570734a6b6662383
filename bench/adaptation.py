#!/usr/bin/env python3
"""Does pg-retrain keep a model accurate while its data changes, and at what
cost in retrains? The real system, end to end, side by side with fixed
retraining strategies.

    pip install -e '.[bench]'                      # river, for the streams
    python bench/adaptation.py                     # every stream and strategy (~40 min)
    python bench/adaptation.py --streams sea --strategies triggers,every --batches 40

For each stream and strategy, a fresh database (a scratch database on
DATABASE_URL's server, else an embedded PostgreSQL) and a fresh MLflow store.
Each batch is fed exactly as an ETL job would: the champion's predictions
first (`mlflow.pyfunc.load_model("models:/<model>@champion")`), one
multi-row INSERT of the rows with their predictions and no labels, then one
UPDATE with the labels. Then the real worker runs once (in this process:
`Worker.run_once()`, which refreshes the drift monitor, checks schedules and
runs every due event).

Strategies:
- ``triggers``: pg-retrain's triggers with the default policy, cooldown 0
  (the first model comes from the schedule of a model never trained);
- ``every``: a manual retrain after every batch; ``everyK``: after every
  K-th batch (``every5``, ``every10``); ``never``: after the first batch
  only. These run with the policy disabled, so no trigger fires.

Per stream it prints: prequential accuracy (the mean accuracy of the served
predictions over batches 2..N; batch 1 has no model), retrains (succeeded,
of which promoted), the retrains' reasons, and per concept change the
batches until the batch accuracy is back within 0.02 of the mean of the 5
batches before the change (0: it never left; -: never back).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from adaptation_sim import STREAMS, recovery  # noqa: E402
from worker import embedded, logs, migrate  # noqa: E402
from worker.db import libpq_url  # noqa: E402

MODEL = "adapt"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Server:
    """Scratch databases on DATABASE_URL's server, or an embedded one."""

    def __init__(self):
        self.embedded = None
        if os.environ.get("DATABASE_URL"):
            self.url = libpq_url(os.environ["DATABASE_URL"])
        else:
            data = Path(tempfile.mkdtemp(prefix="pg-retrain-adapt-")) / "pgdata"
            self.embedded = embedded.start(data, delete_on_exit=True)
            self.url = self.embedded.url

    def create(self) -> tuple[str, str]:
        name = f"pgretrain_adapt_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name, make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.cleanup()


class Champion:
    """The served model, loaded the standard way, reloaded when it changes."""

    def __init__(self, conn, tracking_uri: str):
        import mlflow

        self._conn = conn
        self._mlflow = mlflow
        self._uri = tracking_uri
        self.version = None
        self.model = None

    def predict(self, rows: list[dict]) -> list[str | None]:
        import pandas as pd

        version = self._conn.execute(
            "SELECT champion_version FROM model_status WHERE model_name = %s",
            (MODEL,)).fetchone()
        version = version[0] if version else None
        if version is None:
            return [None] * len(rows)
        if version != self.version:
            from worker.tracking import registered_name

            self._mlflow.set_tracking_uri(self._uri)
            self.model = self._mlflow.pyfunc.load_model(
                f"models:/{registered_name(MODEL)}@champion")
            self.version = version
        return [str(p) for p in self.model.predict(pd.DataFrame.from_records(rows))]


def run(server: Server, stream: str, strategy: str, seed: int, batches: int,
        batch_size: int) -> dict:
    from worker import signals
    from worker.runner import Settings, Worker

    rows, labels, changes = STREAMS[stream](seed)
    rows, labels = rows[:batches * batch_size], labels[:batches * batch_size]
    changes = [c for c in changes if c < batches]
    name, url = server.create()
    store = Path(tempfile.mkdtemp(prefix="pg-retrain-adapt-mlflow-"))
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    # Manual retrains after batch 0, then every `every` batches (0: never again).
    every = {"never": 0, "every": 1, "triggers": None}.get(strategy)
    if every is None and strategy != "triggers":
        every = int(strategy.removeprefix("every"))
    try:
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE retrain_policies SET cooldown = '0' WHERE model_name = 'default'")
            if strategy != "triggers":
                conn.execute("UPDATE retrain_policies SET enabled = false, "
                             "schedule_interval = NULL WHERE model_name = 'default'")
            signals.reset()
            worker = Worker(Settings(database_url=url, tracking_uri=tracking_uri,
                                     heartbeat_interval=5.0))
            champion = Champion(conn, tracking_uri)
            accuracy, started = [], time.monotonic()
            for b in range(batches):
                batch = rows[b * batch_size:(b + 1) * batch_size]
                truth = labels[b * batch_size:(b + 1) * batch_size]
                served = champion.predict(batch)
                ids = [r[0] for r in conn.execute(
                    "INSERT INTO training_data (model_name, features, prediction) "
                    "SELECT %s, f, p FROM unnest(%s::jsonb[], %s::text[]) AS u(f, p) "
                    "RETURNING id", (MODEL, [Jsonb(r) for r in batch], served)).fetchall()]
                conn.execute("UPDATE training_data AS t SET label = u.label "
                             "FROM unnest(%s::bigint[], %s::text[]) AS u(id, label) "
                             "WHERE t.id = u.id", (ids, truth))
                known = [(p, t) for p, t in zip(served, truth) if p is not None]
                accuracy.append(sum(p == t for p, t in known) / len(known) if known
                                else float("nan"))
                if every is not None and (b == 0 or (every and b % every == 0)):
                    conn.execute("SELECT request_retrain(%s)", (MODEL,))
                worker.run_once()
                if b % 10 == 9:
                    log(f"  {stream}/{strategy}: batch {b + 1}/{batches}, "
                        f"{time.monotonic() - started:.0f} s")
            events = conn.execute(
                "SELECT reason, promoted FROM retrain_events "
                "WHERE model_name = %s AND status = 'succeeded'", (MODEL,)).fetchall()
            failed = conn.execute("SELECT count(*) FROM retrain_events WHERE model_name = %s "
                                  "AND status = 'failed'", (MODEL,)).fetchone()[0]
        scored = [a for a in accuracy[1:] if a == a]
        return {
            "stream": stream, "strategy": strategy,
            "prequential": statistics.fmean(scored) if scored else float("nan"),
            "retrains": len(events), "promoted": sum(bool(p) for _, p in events),
            "failed": failed, "reasons": Counter(r for r, _ in events),
            "recovery": recovery(accuracy, changes), "seconds": time.monotonic() - started,
        }
    finally:
        server.drop(name)
        shutil.rmtree(store, ignore_errors=True)


def table(results: list[dict]) -> str:
    lines = [f"{'stream':<12} {'strategy':<9} {'preq acc':>8} {'retrains':>8} {'promoted':>8} "
             f"{'recovery':>10} {'seconds':>7}  reasons",
             "-" * 100]
    for r in results:
        rec = ",".join("-" if k is None else str(k) for k in r["recovery"]) or "n/a"
        reasons = " ".join(f"{k}={v}" for k, v in sorted(r["reasons"].items()))
        lines.append(f"{r['stream']:<12} {r['strategy']:<9} {r['prequential']:>8.4f} "
                     f"{r['retrains']:>8} {r['promoted']:>8} {rec:>10} {r['seconds']:>7.0f}  "
                     f"{reasons}" + (f" failed={r['failed']}" if r["failed"] else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="sea,input_shift,agrawal,stationary")
    p.add_argument("--strategies", default="never,every,every5,triggers")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=500)
    args = p.parse_args(argv)
    logs.setup("warning")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    server = Server()
    results = []
    try:
        with psycopg.connect(server.url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        for stream in args.streams.split(","):
            for strategy in args.strategies.split(","):
                log(f"{stream}, {strategy} ...")
                results.append(run(server, stream, strategy, args.seed, args.batches,
                                   args.batch_size))
                log(table(results[-1:]).splitlines()[-1])
    finally:
        server.close()
    print(f"PostgreSQL {version}; seed {args.seed}; {args.batches} batches of "
          f"{args.batch_size} rows; default policy, cooldown 0")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
