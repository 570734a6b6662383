#!/usr/bin/env python3
"""Insert-path overhead of pg-retrain's training_data triggers.

Measures what the statement-level AFTER INSERT trigger costs an ETL job, on
the same migrated schema, by timing the same loads with the triggers enabled
and with ``ALTER TABLE training_data DISABLE TRIGGER USER``, interleaved, and
comparing medians. Targets (see bench/README.md): <= 1.10x for a bulk COPY of
200k rows, <= 1.20x for single-row INSERT transactions.

    python bench/insert_overhead.py                      # embedded server
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python bench/insert_overhead.py --reps 5

With DATABASE_URL, a scratch database ``pgretrain_bench_<random>`` is created
on that server and dropped at the end. Without it, a throwaway embedded
server (pgserver) is started in a temporary directory and deleted at the end.
Progress goes to stderr, the result table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# Runnable as `python bench/insert_overhead.py` from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

TARGETS = {"copy": 1.10, "insert": 1.20}
COLUMNS = ("model_name", "features", "label", "prediction", "error_rate")
INSERT_SQL = (
    "INSERT INTO training_data (model_name, features, label, prediction, error_rate) "
    "VALUES (%s, %s::jsonb, %s, %s, %s)"
)
COPY_SQL = f"COPY training_data ({', '.join(COLUMNS)}) FROM STDIN"
RESET_SQL = [
    "TRUNCATE training_data RESTART IDENTITY",
    "TRUNCATE retrain_events RESTART IDENTITY",
]
# Other state the insert path writes, in schema revisions that have it as a table.
OPTIONAL_RESET_TABLES = ("retrain_models", "drift_inbox", "retrain_error_windows",
                         "retrain_window_bounds", "drift_label_changes")
ALL_CASES = ("copy", "insert", "copy_quiet", "insert_quiet", "copy_fire", "insert_fire")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure worth one readable line."""


# ---------------------------------------------------------------------------
# Data: realistic ETL rows
# ---------------------------------------------------------------------------

REGIONS = ["north", "south", "east", "west", "central"]
PLANS = ["basic", "standard", "premium"]
LABELS = ["churn", "stay"]


def make_rows(n: int, *, models: list[str], mismatch: float, error_lo: float,
              error_hi: float, batch: int, seed: int) -> list[tuple]:
    """n rows of (model_name, features_json, label, prediction, error_rate).

    Nine features: six numbers, two string categories, one boolean, with a
    few nulls as real feeds have. error_rate is one value per upstream batch
    of ``batch`` rows, uniform in [error_lo, error_hi]. prediction differs
    from label in about ``mismatch`` of the rows.
    """
    rnd = random.Random(seed)
    rows = []
    error_rate = None
    for i in range(n):
        if i % batch == 0:
            error_rate = round(rnd.uniform(error_lo, error_hi), 4)
        features = {
            "age": rnd.randint(18, 90),
            "income": round(rnd.lognormvariate(10.5, 0.6), 2),
            "tenure_months": rnd.randint(0, 120),
            "balance": round(rnd.gauss(2500.0, 1200.0), 2),
            "num_products": rnd.randint(1, 5),
            "credit_score": None if rnd.random() < 0.02 else rnd.randint(300, 850),
            "region": rnd.choice(REGIONS),
            "plan": None if rnd.random() < 0.01 else rnd.choice(PLANS),
            "is_active": rnd.random() < 0.7,
        }
        label = LABELS[rnd.random() < 0.8]
        prediction = label if rnd.random() >= mismatch else LABELS[label == "churn"]
        rows.append((models[i % len(models)],
                     json.dumps(features, separators=(",", ":")),
                     label, prediction, error_rate))
    return rows


def _copy_field(value) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    return (text.replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


def copy_text(rows: list[tuple]) -> bytes:
    """The rows in COPY text format, generated once and reused by every run."""
    return "".join("\t".join(_copy_field(v) for v in row) + "\n" for row in rows).encode()


@dataclass
class Case:
    name: str
    kind: str                 # "copy" or "insert"
    payload: object           # bytes (copy) or list of rows (insert)
    rows: int
    times: dict = field(default_factory=lambda: {"on": [], "off": []})
    cpu: dict = field(default_factory=lambda: {"on": [], "off": []})
    fired: list = field(default_factory=list)   # per "on" run: (events, firings)
    # Interleaved runs: per run, on/off seconds and CPU of its own blocks,
    # and the rows each side inserted.
    pair_ratios: list = field(default_factory=list)
    side_rows: dict = field(default_factory=lambda: {"on": 0, "off": 0})
    pair_cpu_ratios: list = field(default_factory=list)


# ---------------------------------------------------------------------------
# Servers and scratch database
# ---------------------------------------------------------------------------

def _with_database(url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    from worker.db import libpq_url

    return make_url(libpq_url(url)).set(database=dbname).render_as_string(hide_password=False)


class Server:
    """The server to run on and a scratch database in it."""

    def __init__(self) -> None:
        self.embedded = None
        self.tmp = None
        self.admin_url = None
        self.dbname = None
        self.url = None

    def start(self) -> None:
        from worker.db import libpq_url

        if os.environ.get("DATABASE_URL"):
            self.admin_url = libpq_url(os.environ["DATABASE_URL"])
            log(f"server: DATABASE_URL ({_redact(self.admin_url)})")
        else:
            from worker import embedded

            self.tmp = Path(tempfile.mkdtemp(prefix="pgretrain-bench-"))
            log(f"server: starting embedded PostgreSQL in {self.tmp} ...")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.embedded = embedded.start(self.tmp / "pgdata", delete_on_exit=True)
            self.admin_url = self.embedded.url
        self.dbname = f"pgretrain_bench_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        except psycopg.Error as exc:
            self.dbname = None
            raise BenchError(f"cannot create the scratch database: {_one_line(exc)}") from None
        self.url = _with_database(self.admin_url, self.dbname)
        log(f"scratch database {self.dbname}: migrating ...")
        from worker import migrate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            migrate.upgrade(self.url)

    def stop(self) -> None:
        if self.dbname and self.admin_url:
            try:
                with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,))
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                        sql.Identifier(self.dbname)))
                log(f"scratch database {self.dbname} dropped")
            except psycopg.Error as exc:
                log(f"warning: could not drop {self.dbname}: {_one_line(exc)}")
        if self.embedded is not None:
            self.embedded.cleanup()
            log("embedded server stopped and deleted")
        if self.tmp is not None and self.tmp.exists():
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

def set_triggers(conn: psycopg.Connection, on: bool) -> None:
    conn.execute(f"ALTER TABLE training_data {'ENABLE' if on else 'DISABLE'} TRIGGER USER")


def reset(conn: psycopg.Connection, can_checkpoint: bool) -> None:
    for stmt in RESET_SQL:
        conn.execute(stmt)
    extra = conn.execute(
        "SELECT array_agg(t) FROM unnest(%s::text[]) AS t "
        "WHERE (SELECT c.relkind FROM pg_class AS c WHERE c.oid = to_regclass(t)) = 'r'",
        (list(OPTIONAL_RESET_TABLES),)).fetchone()[0]
    if extra:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in extra)))
    if can_checkpoint:
        # Untimed: so that a checkpoint triggered by the previous run's WAL
        # does not land inside the next run.
        conn.execute("CHECKPOINT")


def run_copy(conn: psycopg.Connection, payload: bytes, chunk: int = 1 << 20) -> float:
    start = time.perf_counter()
    with conn.transaction():
        with conn.cursor() as cur:
            with cur.copy(COPY_SQL) as copy:
                for i in range(0, len(payload), chunk):
                    copy.write(payload[i:i + chunk])
    return time.perf_counter() - start


def run_inserts(conn: psycopg.Connection, rows: list[tuple]) -> float:
    # conn is in autocommit: every execute is its own committed transaction.
    with conn.cursor() as cur:
        start = time.perf_counter()
        for row in rows:
            cur.execute(INSERT_SQL, row, prepare=True)
        return time.perf_counter() - start


class BackendCpu:
    """CPU seconds (user + system) of the server process serving a connection,
    from /proc, when that process runs on this machine; else None.

    Wall-clock time is what the targets are about, but other processes share
    the cores: the backend's own CPU time is a second, steadier view of what
    the triggers cost the server.
    """

    def __init__(self, conn: psycopg.Connection, dbname: str) -> None:
        self.path = None
        pid = conn.info.backend_pid
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            # The process title names the scratch database: not another server's pid.
            if "postgres" in cmdline and dbname in cmdline:
                self.path = Path(f"/proc/{pid}/stat")
                self.read()
        except OSError:
            self.path = None

    def read(self) -> float | None:
        if self.path is None:
            return None
        fields = self.path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_inserts_interleaved(conn: psycopg.Connection, rows: list[tuple], block: int,
                            first_on: bool, cpu: "BackendCpu") -> dict:
    """The rows in blocks of `block` INSERT transactions, triggers on and off
    in turn (ALTER TABLE between blocks, untimed). Adjacent blocks run a
    few tens of milliseconds apart, so a machine that slows down for
    seconds slows both sides alike. Returns seconds and backend CPU per side."""
    totals = {"on": 0.0, "off": 0.0, "cpu_on": 0.0, "cpu_off": 0.0, "rows_on": 0, "rows_off": 0}
    with conn.cursor() as cur:
        for i, start in enumerate(range(0, len(rows), block)):
            on = first_on if i % 2 == 0 else not first_on
            set_triggers(conn, on)
            side = "on" if on else "off"
            cpu_before = cpu.read()
            began = time.perf_counter()
            chunk = rows[start:start + block]
            for row in chunk:
                cur.execute(INSERT_SQL, row, prepare=True)
            totals[side] += time.perf_counter() - began
            totals["rows_" + side] += len(chunk)
            if cpu_before is not None:
                totals["cpu_" + side] += cpu.read() - cpu_before
    return totals


def run_once(conn: psycopg.Connection, case: Case) -> float:
    if case.kind == "copy":
        return run_copy(conn, case.payload)
    return run_inserts(conn, case.payload)


def check_rows(conn: psycopg.Connection, expected: int) -> None:
    got = conn.execute("SELECT count(*) FROM training_data").fetchone()[0]
    if got != expected:
        raise BenchError(f"expected {expected} rows in training_data after a run, found {got}")


def fired(conn: psycopg.Connection) -> tuple[int, int]:
    """(events recorded, total firings counted in their details)."""
    return conn.execute(
        "SELECT count(*), coalesce(sum((SELECT sum((d.value ->> 'count')::bigint) "
        "FROM jsonb_each(e.details) AS d)), 0)::bigint FROM retrain_events AS e"
    ).fetchone()


def server_info(conn: psycopg.Connection) -> dict:
    info = {"version": conn.execute("SELECT version()").fetchone()[0]}
    try:
        info["revision"] = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    except psycopg.Error:
        info["revision"] = "?"
    for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_level",
                 "shared_buffers", "max_wal_size", "jit"):
        info[name] = conn.execute(
            "SELECT current_setting(%s, true)", (name,)).fetchone()[0]
    return info


def can_checkpoint(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("CHECKPOINT")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def measure(url: str, dbname: str, cases: list[Case], reps: int, sync_commit: str | None,
            warmup: bool, interleave: int = 0) -> tuple[dict, bool]:
    options = "-c search_path=public"
    if sync_commit:
        options += f" -c synchronous_commit={sync_commit}"
    with psycopg.connect(url, autocommit=True, options=options) as conn:
        info = server_info(conn)
        ckpt = can_checkpoint(conn)
        cpu = BackendCpu(conn, dbname)
        if cpu.path is None:
            log("note: server process not visible in /proc; no backend CPU column")
        if not ckpt:
            log("note: no CHECKPOINT privilege; checkpoints may land inside runs")
        if warmup:
            # Untimed: plan caches, plpgsql compilation, buffer allocation.
            log("warm-up ...")
            for case in cases:
                small = (case.payload[: len(case.payload) // 50] if case.kind == "copy"
                         else case.payload[:100])
                small = small[: small.rfind(b"\n") + 1] if case.kind == "copy" else small
                for on in (True, False):
                    set_triggers(conn, on)
                    reset(conn, False)
                    run_once(conn, Case(case.name, case.kind, small, 0))
        total = reps * len(cases) * 2
        done = 0
        for rep in range(reps):
            # Interleaved, and the order flips each repetition (on/off,
            # off/on, ...) so that a slow drift of the machine hits both.
            order = (True, False) if rep % 2 == 0 else (False, True)
            for case in cases:
                if case.kind == "insert" and interleave:
                    reset(conn, ckpt)
                    t = run_inserts_interleaved(conn, case.payload, interleave, order[0], cpu)
                    check_rows(conn, case.rows)
                    case.fired.append(fired(conn))
                    case.times["on"].append(t["on"])
                    case.times["off"].append(t["off"])
                    case.pair_ratios.append((t["on"] / t["rows_on"]) / (t["off"] / t["rows_off"]))
                    case.side_rows = {"on": t["rows_on"], "off": t["rows_off"]}
                    if cpu.path is not None:
                        case.cpu["on"].append(t["cpu_on"])
                        case.cpu["off"].append(t["cpu_off"])
                        if t["cpu_off"] > 0:
                            case.pair_cpu_ratios.append((t["cpu_on"] / t["rows_on"])
                                                        / (t["cpu_off"] / t["rows_off"]))
                    done += 2
                    log(f"[{done}/{total}] rep {rep + 1}/{reps} {case.name:<12} interleaved "
                        f"on {t['on']:.3f} s / off {t['off']:.3f} s")
                    continue
                for on in order:
                    set_triggers(conn, on)
                    reset(conn, ckpt)
                    cpu_before = cpu.read()
                    seconds = run_once(conn, case)
                    cpu_after = cpu.read()
                    check_rows(conn, case.rows)
                    key = "on" if on else "off"
                    case.times[key].append(seconds)
                    if cpu_before is not None:
                        case.cpu[key].append(cpu_after - cpu_before)
                    if on:
                        case.fired.append(fired(conn))
                    done += 1
                    cpu_text = ("" if cpu_before is None
                                else f"  (backend CPU {cpu_after - cpu_before:.2f} s)")
                    log(f"[{done}/{total}] rep {rep + 1}/{reps} {case.name:<12} "
                        f"triggers {key:<3} {seconds:8.3f} s{cpu_text}")
        set_triggers(conn, True)
        reset(conn, False)
    return info, ckpt


def report(info: dict, cases: list[Case], args, server_label: str, ckpt: bool) -> None:
    print(f"server:   {server_label}")
    print(f"version:  {info['version']}")
    print(f"schema:   alembic revision {info['revision']}")
    print("settings: " + ", ".join(f"{k}={info[k]}" for k in (
        "fsync", "synchronous_commit", "full_page_writes", "wal_level",
        "shared_buffers", "max_wal_size", "jit")))
    print(f"load:     {args.rows} COPY rows, {args.inserts} single-row INSERTs, "
          f"{args.models} model(s), mismatch {args.mismatch:.0%} "
          f"(quiet {args.quiet_mismatch:.0%}), "
          f"error_rate {args.error_lo}-{args.error_hi} (fire {args.fire_lo}-{args.fire_hi}) "
          f"per batch of {args.batch}, "
          f"reps {args.reps}, checkpoint between runs: {'yes' if ckpt else 'no'}")
    print()
    head = (f"{'case':<12} {'rows':>7} {'off s':>9} {'on s':>9} {'ratio':>7} "
            f"{'target':>7} {'off us/row':>11} {'on us/row':>10} {'+us/row':>8} "
            f"{'spread on/off':>15} {'cpu ratio':>9} {'events/firings':>15}")
    print(head)
    print("-" * len(head))
    for case in cases:
        off = statistics.median(case.times["off"])
        on = statistics.median(case.times["on"])
        ratio = statistics.median(case.pair_ratios) if case.pair_ratios else on / off
        target = TARGETS["copy" if case.kind == "copy" else "insert"]
        flag = "" if ratio <= target else " OVER"
        spread_on = (max(case.times["on"]) - min(case.times["on"])) / on
        spread_off = (max(case.times["off"]) - min(case.times["off"])) / off
        ev, fi = case.fired[-1] if case.fired else (0, 0)
        cpu_ratio = "n/a"
        if case.pair_cpu_ratios:
            cpu_ratio = f"{statistics.median(case.pair_cpu_ratios):.2f}x"
        elif case.cpu["on"] and case.cpu["off"] and statistics.median(case.cpu["off"]) > 0:
            cpu_ratio = (f"{statistics.median(case.cpu['on']) / statistics.median(case.cpu['off']):.2f}x")
        rows_on = case.side_rows["on"] or case.rows
        rows_off = case.side_rows["off"] or case.rows
        print(f"{case.name:<12} {case.rows:>7} {off:>9.3f} {on:>9.3f} {ratio:>6.3f}x "
              f"{target:>6.2f}x {off / rows_off * 1e6:>11.1f} {on / rows_on * 1e6:>10.1f} "
              f"{(on / rows_on - off / rows_off) * 1e6:>8.1f} "
              f"{spread_on:>6.0%}/{spread_off:<7.0%} {cpu_ratio:>9}  {ev:>5}/{fi:<9}{flag}")
    print()
    print("ratio = median(on) / median(off) of wall-clock seconds (what the targets are "
          "about); spread = (max-min)/median over the reps;")
    if any(case.pair_ratios for case in cases):
        print(f"insert cases interleaved: each run alternates blocks of {args.interleave} "
              "INSERTs with triggers on and off; ratio = median over runs of on/off "
              "within a run;")
    print("cpu ratio = the same for the server backend's own CPU time (steadier when "
          "other processes share the cores; n/a when the server is not local);")
    print("events/firings = retrain_events rows and summed details counts after the "
          "last triggers-on run; OVER = wall ratio above target")
    print("wall seconds per run:")
    for case in cases:
        print(f"  {case.name:<12} off: " + " ".join(f"{t:.3f}" for t in case.times["off"])
              + " | on: " + " ".join(f"{t:.3f}" for t in case.times["on"]))
    if any(case.cpu["on"] for case in cases):
        print("backend CPU seconds per run:")
        for case in cases:
            print(f"  {case.name:<12} off: " + " ".join(f"{t:.2f}" for t in case.cpu["off"])
                  + " | on: " + " ".join(f"{t:.2f}" for t in case.cpu["on"]))


def build_cases(args) -> list[Case]:
    models = ["churn"] if args.models == 1 else [f"churn_{i}" for i in range(args.models)]
    cases = []
    for name in args.case_names:
        fire = name.endswith("_fire")
        lo, hi = (args.fire_lo, args.fire_hi) if fire else (args.error_lo, args.error_hi)
        mismatch = args.quiet_mismatch if name.endswith("_quiet") else args.mismatch
        kind = name.split("_")[0]
        n = args.rows if kind == "copy" else args.inserts
        log(f"generating {n} rows for {name} ...")
        rows = make_rows(n, models=models, mismatch=mismatch, error_lo=lo,
                         error_hi=hi, batch=args.batch, seed=args.seed)
        payload = copy_text(rows) if kind == "copy" else rows
        cases.append(Case(name, kind, payload, n))
    return cases


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Insert-path overhead of the training_data triggers "
                    "(triggers on vs DISABLE TRIGGER USER, interleaved medians).")
    p.add_argument("--reps", type=int, default=5, help="repetitions per case and mode (5)")
    p.add_argument("--rows", type=int, default=200_000, help="rows per COPY (200000)")
    p.add_argument("--inserts", type=int, default=2000,
                   help="single-row INSERT transactions per run (2000)")
    p.add_argument("--models", type=int, default=1,
                   help="spread rows round-robin over this many models (1)")
    p.add_argument("--cases", default=",".join(ALL_CASES),
                   help=f"comma-separated, from {','.join(ALL_CASES)} (all); "
                        "*_quiet cases use --quiet-mismatch, *_fire cases report "
                        "error_rate above the threshold")
    p.add_argument("--mismatch", type=float, default=0.15,
                   help="share of rows whose prediction differs from the label (0.15); "
                        "above the 0.1 threshold, so the rolling window fires")
    p.add_argument("--quiet-mismatch", type=float, default=0.05,
                   help="mismatch of the *_quiet cases, below the threshold (0.05)")
    p.add_argument("--error-lo", type=float, default=0.02)
    p.add_argument("--error-hi", type=float, default=0.08)
    p.add_argument("--fire-lo", type=float, default=0.11,
                   help="error_rate range of the *_fire cases (0.11-0.2)")
    p.add_argument("--fire-hi", type=float, default=0.2)
    p.add_argument("--batch", type=int, default=1000,
                   help="rows per upstream batch sharing one error_rate (1000)")
    p.add_argument("--synchronous-commit", choices=["on", "off", "local"],
                   help="set synchronous_commit for the benchmark session "
                        "(default: the server's setting)")
    p.add_argument("--interleave", type=int, default=100, metavar="N",
                   help="insert cases: alternate triggers on and off every N INSERTs "
                        "within each run, and take the ratio within the run (100); "
                        "0: whole runs on or off")
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.reps < 1 or args.rows < 1 or args.inserts < 1 or args.models < 1:
        p.error("--reps, --rows, --inserts and --models must be positive")
    args.case_names = [c.strip() for c in args.cases.split(",") if c.strip()]
    for name in args.case_names:
        if name not in ALL_CASES:
            p.error(f"unknown case {name!r}; choose from {', '.join(ALL_CASES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    server = Server()
    try:
        server.start()
        cases = build_cases(args)
        label = ("DATABASE_URL " + _redact(server.admin_url) if server.embedded is None
                 else "embedded (pgserver)")
        started = time.perf_counter()
        info, ckpt = measure(server.url, server.dbname, cases, args.reps, args.synchronous_commit,
                             not args.no_warmup, args.interleave)
        log(f"measured in {time.perf_counter() - started:.0f} s")
        report(info, cases, args, label, ckpt)
        return 0
    except KeyboardInterrupt:
        log("insert_overhead: interrupted")
        return 130
    except (BenchError, psycopg.Error, OSError) as exc:
        log(f"insert_overhead: error: {_one_line(exc)}")
        return 1
    except Exception as exc:  # still one line, never a traceback
        from worker.errors import UserError

        if isinstance(exc, UserError):
            log(f"insert_overhead: error: {_one_line(exc)}")
        else:
            log(f"insert_overhead: error: {type(exc).__name__}: {_one_line(exc)}")
        return 1
    finally:
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001
            log(f"warning: cleanup failed: {_one_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
