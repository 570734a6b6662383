"""Time from the commit that records an event to the moment a worker claims it.

An idle `worker listen` process waits on LISTEN; the script records manual
events one at a time (each in its own transaction) and reads each event's
started_at (set with clock_timestamp() by the claim). The events are for a
model without rows, so each fails at once ("too few labelled rows") and the
worker is idle again before the next one.

    python bench/claim_latency.py [--events 200]

Uses DATABASE_URL when set (a scratch database is created and dropped),
else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from worker import embedded, migrate
from worker.db import libpq_url


def scratch_database(server_url: str):
    name = f"pgretrain_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop():
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
    return url, drop


def wait_claimed(conn, event_id: int, deadline: float):
    while time.monotonic() < deadline:
        row = conn.execute("SELECT started_at, status FROM retrain_events WHERE id = %s",
                           (event_id,)).fetchone()
        if row[0] is not None:
            return row[0]
        time.sleep(0.002)
    raise SystemExit(f"error: event {event_id} was not claimed within the deadline")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pg-retrain-bench-"))
    server = None
    if os.environ.get("DATABASE_URL"):
        server_url = libpq_url(os.environ["DATABASE_URL"])
    else:
        server = embedded.start(tmp / "pgdata", delete_on_exit=True)
        server_url = server.url
    url, drop = scratch_database(server_url)
    worker = None
    try:
        migrate.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO retrain_policies (model_name) VALUES ('latency')")
        env = {**os.environ, "DATABASE_URL": url,
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        log = open(tmp / "worker.log", "w")
        worker = subprocess.Popen(
            [sys.executable, "-c", "from worker.cli import main; main()", "listen",
             "--poll-interval", "30", "--schedule-interval", "3600"],
            env=env, cwd=tmp, stderr=log)
        with psycopg.connect(url, autocommit=True) as watcher, psycopg.connect(url) as writer:
            # Wait until the worker listens (its first drain has run).
            deadline = time.monotonic() + 120
            while "listening" not in (tmp / "worker.log").read_text():
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise SystemExit("error: the worker did not start; see " + str(tmp / "worker.log"))
                time.sleep(0.1)
            latencies = []
            for i in range(args.events):
                event_id = writer.execute("SELECT request_retrain('latency')").fetchone()[0]
                before_commit = datetime.now(timezone.utc)
                writer.commit()
                started = wait_claimed(watcher, event_id, time.monotonic() + 30)
                latencies.append((started - before_commit).total_seconds() * 1000)
                # Let the worker finish the event and go idle again.
                while watcher.execute("SELECT status FROM retrain_events WHERE id = %s",
                                      (event_id,)).fetchone()[0] == "running":
                    time.sleep(0.002)
                time.sleep(0.02)
                if (i + 1) % 50 == 0:
                    print(f"{i + 1}/{args.events} events", file=sys.stderr)
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
        version = psycopg.connect(url).execute("SHOW server_version").fetchone()[0]
        print(f"PostgreSQL {version}, {args.events} events, idle worker")
        print(f"{'metric':<22}{'ms':>8}")
        for name, value in [("p50", p(0.50)), ("p90", p(0.90)), ("p99", p(0.99)),
                            ("max", latencies[-1]), ("mean", statistics.mean(latencies))]:
            print(f"commit -> claimed {name:<4}{value:>8.2f}")
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        drop()
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
