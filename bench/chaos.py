#!/usr/bin/env python3
"""Chaos soak (issue 14 part 4): real workers, killed, cut off and restarted
while events keep coming; then every event, MLflow run and alias is checked.

    python bench/chaos.py                         # the default soak: a few minutes
    python bench/chaos.py --events 600 --kills 40 # longer
    python bench/chaos.py --workers 2 --events 30 --kills 3 --terminations 1 --restarts 0

What it does:

1. Starts a throwaway PostgreSQL cluster in a temporary directory (initdb and
   pg_ctl, as the ``postgres`` OS user when run as root), so that it can
   restart it; creates and migrates a database (worker.migrate.upgrade); an
   MLflow SQLite store in the same directory. With --database-url it uses
   that (empty, migrated or not) database instead, and cannot restart it.
2. Loads labelled rows for --models healthy models (``m0``, ``m1``, ...; a
   threshold rule with 10% label noise, more rows for each) and two models
   whose retrains fail: ``sparse`` (too few labelled rows) and ``oneclass``
   (one label only). Policies: cooldown 0, a small futile_backoff, a short
   schedule_interval, thresholds that let each metrics row fire the reason
   it is meant to.
3. Runs --workers ``worker listen`` processes (the real console script,
   --log-format json, small heartbeat/stale timings, OMP_NUM_THREADS=1).
4. Feeds events from all seven reasons until --events were recorded:
   error_rate rows and windows of wrong predictions (training_data),
   performance / accuracy_drop / drift_and_accuracy / drift rows
   (model_metrics), schedule (a model left alone past its schedule_interval),
   manual (``worker trigger``); a few firings merge into a pending event.
5. Meanwhile: SIGKILLs a worker --kills times, mostly while it trains (a
   running event is watched for and its worker_id's process killed a moment
   after it loaded its rows), and restarts it; terminates every worker
   connection (pg_terminate_backend) --terminations times; restarts
   PostgreSQL --restarts times (pg_ctl restart -m fast; with --outage N it
   stays down N seconds, long enough for every heartbeat to go stale).
   Optionally (--freezes) SIGSTOPs a training worker past --stale-after and
   SIGCONTs it: its event is taken over meanwhile while it still lives.
6. Stops feeding and schedules, restarts any dead worker, lets the workers
   drain the queue, stops them with SIGTERM, and checks:
   - every event ended succeeded, failed (with an error) or cancelled only
     when merged into a newer pending event; none is pending or running;
   - no event ran twice at once: no two attempts of one event overlap in
     time, by the workers' logs (claim to outcome, or to the kill) and by the
     MLflow runs (start/end, tagged with event, attempt and worker). The one
     overlap a freeze explains (the frozen attempt, taken over, gave up by
     itself and left no run but one marked abandoned) is listed as "fenced";
   - no run is lost (every succeeded event's mlflow_run_id exists, FINISHED)
     and none is orphaned (each run is an event's recorded run, or tagged
     pg_retrain.abandoned, or ended KILLED by reconcile);
   - MLflow's champion alias of every model is model_status.champion_version.
7. Prints a table of counts; exit status 0 when every check passed, 1 when
   one failed (the work directory with every log is then kept), 2 when the
   soak could not run.

Progress goes to stderr, the table to stdout. Needs initdb/pg_ctl on PATH
(or --database-url) and the `worker` console script next to this Python.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

REASONS = ["error_rate", "performance", "accuracy_drop", "drift_and_accuracy", "drift",
           "schedule", "manual"]
STATUSES = ["succeeded", "failed", "cancelled", "pending", "running"]
FAILING = ["sparse", "oneclass"]
APP = "chaos"                 # application_name of the soak's own connections
WORKER_APP = "chaos-worker"   # PGAPPNAME of the workers: whom terminations target


def say(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ChaosError(Exception):
    """The soak could not run (not a failed check)."""


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@dataclass
class Options:
    workers: int = 4
    models: int = 3
    events: int = 300
    duration: float = 900.0        # feeding stops after this many seconds whatever
    kills: int = 20
    training_kills: float = 0.8    # share of kills aimed at a worker that trains
    terminations: int = 3
    restarts: int = 1
    freezes: int = 0               # SIGSTOPs of a training worker past --stale-after
    outage: float = 0.0            # seconds the server stays down in a restart
    rows: int = 1500               # labelled rows of m0 at the start; m1 2x, m2 3x, ...
    max_training_rows: int = 6000
    schedule_seconds: int = 8      # healthy models' schedule_interval
    feed_interval: float = 0.25
    fail_share: float = 0.15       # share of the firings aimed at the failing models
    heartbeat_interval: float = 0.5
    stale_after: float = 5.0
    retry_delay: float = 0.5
    drain_timeout: float = 300.0
    seed: int = 1
    database_url: str | None = None
    tracking_uri: str | None = None
    workdir: Path | None = None
    keep: bool = False


# ---------------------------------------------------------------------------
# The PostgreSQL server
# ---------------------------------------------------------------------------


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ChaosError("running as root and there is no `postgres` user for pg_ctl") from None
    return ["runuser", "-u", "postgres", "--", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A throwaway cluster in ``directory`` that pg_ctl can restart."""

    def __init__(self, directory: Path):
        for tool in ("initdb", "pg_ctl"):
            if shutil.which(tool) is None:
                raise ChaosError(f"{tool} is not on PATH (or pass --database-url)")
        self.dir = directory
        self.data = directory / "pgdata"
        self.log = directory / "server.log"
        self.port = _free_port()
        directory.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")
        settings = {
            "port": self.port, "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{directory}'", "max_connections": 200,
            # A soak, not a durability test of PostgreSQL.
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "log_min_messages": "warning", "log_connections": "off",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# bench/chaos.py\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")
        if os.geteuid() == 0:
            shutil.chown(self.data / "postgresql.conf", "postgres", "postgres")

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(_as_server_user(list(cmd)), capture_output=True, text=True)
        if check and result.returncode != 0:
            raise ChaosError(f"{cmd[0]} {cmd[-1]} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def restart(self, outage: float = 0.0) -> None:
        if outage <= 0:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                      "-m", "fast", "restart")
            return
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")
        time.sleep(outage)
        self.start()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop",
                  check=False)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def _connect(url: str, purpose: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, application_name=f"{APP}-{purpose}",
                           connect_timeout=5)


# ---------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------


CLAIMED = re.compile(r"^event (\d+) claimed: model (.*), reasons (\S*), attempt (\d+)/(\d+)")
LOADED = re.compile(r"^event (\d+): loaded ")
DECIDED = re.compile(r"^event (\d+): data window ")
WRITTEN = re.compile(r"^event (\d+): model .* version (\S+) accuracy ")
# What ends an attempt, as its worker logs it.
ENDS = [
    (re.compile(r"^event (\d+) succeeded$"), "succeeded"),
    (re.compile(r"^event (\d+) attempt \d+ failed: "), "retry"),
    (re.compile(r"^event (\d+) failed: "), "failed"),
    (re.compile(r"^event (\d+) handed back on shutdown"), "handed back"),
    (re.compile(r"^could not hand back event (\d+) "), "not handed back"),
    (re.compile(r"^event (\d+) (?:was taken over while it trained|is no longer ours)"
                r".*leaving it to its new worker"), "lost"),
]
# The listen loop caught something: the attempt in progress, if any, is over.
LOOP_ENDS = re.compile(r"^(database connection lost|database error \(|unexpected error; "
                       r"carrying on|stopped: )")


def worker_command() -> list[str]:
    script = shutil.which("worker", path=str(Path(sys.executable).parent)) or shutil.which("worker")
    if script:
        return [script]
    return [sys.executable, "-c", "from worker.entry import main; main()"]


@dataclass
class Incarnation:
    slot: int
    number: int
    proc: subprocess.Popen
    log_path: Path
    started: float
    ended: float | None = None
    how: str | None = None        # killed / stopped / died
    exit_code: int | None = None
    _offset: int = 0
    _partial: str = ""
    lines: list = field(default_factory=list)   # (time, level, message, traceback?)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def name(self) -> str:
        return f"w{self.slot}.{self.number}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def owns(self, worker_id: str | None) -> bool:
        return worker_id is not None and worker_id.endswith(f":{self.pid}")

    def read(self) -> list:
        """New log lines since the last call, parsed (also kept in .lines)."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        new = []
        for raw in complete:
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                when = datetime.fromisoformat(entry["time"]).timestamp()
                new.append((when, entry.get("level"), entry.get("message", ""),
                            entry.get("traceback")))
            except (ValueError, KeyError, TypeError):
                new.append((None, "raw", raw, None))
        self.lines.extend(new)
        return new


class Workers:
    def __init__(self, directory: Path, env: dict, args: list[str], count: int):
        self.dir = directory
        self.env = env
        self.args = args
        self.count = count
        self.all: list[Incarnation] = []
        self.slots: dict[int, Incarnation] = {}
        self._lock = threading.Lock()

    def start(self, slot: int) -> Incarnation:
        with self._lock:
            number = sum(1 for i in self.all if i.slot == slot) + 1
            log_path = self.dir / f"worker-{slot}.{number}.log"
            with open(log_path, "w") as handle:
                proc = subprocess.Popen(
                    [*worker_command(), "--log-format", "json", "listen", *self.args],
                    cwd=self.dir, env=self.env, stdout=handle, stderr=subprocess.STDOUT)
            inc = Incarnation(slot, number, proc, log_path, time.time())
            self.all.append(inc)
            self.slots[slot] = inc
            return inc

    def start_all(self) -> None:
        for slot in range(self.count):
            self.start(slot)

    def live(self) -> list[Incarnation]:
        return [i for i in self.slots.values() if i.alive()]

    def by_worker_id(self, worker_id: str | None) -> Incarnation | None:
        for inc in self.live():
            if inc.owns(worker_id):
                return inc
        return None

    def kill(self, inc: Incarnation) -> None:
        os.kill(inc.pid, signal.SIGKILL)
        inc.exit_code = inc.proc.wait(timeout=30)
        inc.ended = time.time()
        inc.how = "killed"

    def wait_listening(self, incs, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(incs)
        while pending:
            for inc in list(pending):
                inc.read()
                if any(m.startswith("listening on channel") for _, _, m, _ in inc.lines):
                    pending.remove(inc)
                elif not inc.alive():
                    raise ChaosError(f"worker {inc.name} exited ({inc.proc.returncode}) before "
                                     f"listening; see {inc.log_path}")
            if pending and time.monotonic() > deadline:
                raise ChaosError(f"workers {[i.name for i in pending]} not listening after "
                                 f"{timeout:.0f}s")
            time.sleep(0.2)

    def stop_all(self, timeout: float = 90) -> None:
        for inc in self.live():
            inc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for inc in self.slots.values():
            if inc.how is not None:
                continue
            try:
                inc.exit_code = inc.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                inc.how = "stopped"
            except subprocess.TimeoutExpired:
                inc.proc.kill()
                inc.exit_code = inc.proc.wait(timeout=30)
                inc.how = "stopped (killed: SIGTERM took too long)"
            inc.ended = time.time()
        for inc in self.all:
            if inc.how is None:   # died on its own
                inc.exit_code = inc.proc.poll()
                inc.how = "died"
                inc.ended = time.time()
            inc.read()


# ---------------------------------------------------------------------------
# Data and policies
# ---------------------------------------------------------------------------


COLORS = ["red", "green", "blue", "yellow"]


def _row(rnd: random.Random, model: str, *, label=None, noise=0.1, prediction="right",
         error_rate=None, labelled=True):
    x = rnd.uniform(-1, 1)
    features = {"x": round(x, 5), "z": round(rnd.gauss(0, 1), 4), "color": rnd.choice(COLORS),
                "flag": rnd.random() < 0.5}
    truth = "yes" if x > 0.1 * (1 if features["flag"] else -1) else "no"
    y = label or (("no" if truth == "yes" else "yes") if rnd.random() < noise else truth)
    pred = None
    if prediction == "right":
        pred = y
    elif prediction == "wrong":
        pred = "no" if y == "yes" else "yes"
    return (model, json.dumps(features), y if labelled else None, pred, error_rate)


def copy_rows(conn, rows) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY training_data (model_name, features, label, prediction, error_rate) "
                      "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def setup_data(conn, opts: Options, healthy: list[str], rnd: random.Random) -> None:
    common = dict(cooldown="0", futile_retrains=5, futile_backoff="0.1 seconds",
                  min_accuracy=0.5, accuracy_drop_tolerance=0.3, combined_max_accuracy=0.95,
                  drift_threshold=0.25, drift_alone=True, error_rate_threshold=0.1,
                  error_window=50, min_error_rows=20, error_rate_margin=None,
                  min_training_rows=50, max_attempts=3,
                  max_training_rows=opts.max_training_rows)
    for model in healthy + FAILING:
        values = dict(common, model_name=model, schedule_interval=(
            f"{opts.schedule_seconds} seconds" if model in healthy
            else f"{opts.schedule_seconds * 4} seconds"))
        columns = list(values)
        conn.execute(sql.SQL("INSERT INTO retrain_policies ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(sql.Placeholder() * len(columns))), list(values.values()))
    # No schedule for models nobody set up (none should appear).
    conn.execute("UPDATE retrain_policies SET schedule_interval = NULL "
                 "WHERE model_name = 'default'")
    with conn.transaction():
        for i, model in enumerate(healthy):
            copy_rows(conn, [_row(rnd, model, prediction=None)
                             for _ in range(opts.rows * (i + 1))])
        copy_rows(conn, [_row(rnd, "sparse", prediction=None) for _ in range(30)])
        copy_rows(conn, [_row(rnd, "oneclass", label="yes", prediction=None)
                         for _ in range(300)])


# ---------------------------------------------------------------------------
# The feeder: events from all seven reasons
# ---------------------------------------------------------------------------


ACTIONS = {   # action: weight, for a model without a pending event
    "error_rate_row": 1.0,
    "error_rate_window": 1.0,
    "performance": 1.0,
    "accuracy_drop": 1.0,
    "drift_and_accuracy": 1.0,
    "drift": 1.0,
    "manual": 0.8,
    "quiet": 0.7,          # left alone past its schedule_interval: a schedule event
}


class Feeder(threading.Thread):
    def __init__(self, url: str, healthy: list[str], opts: Options, rnd: random.Random,
                 trigger_env: dict, directory: Path):
        super().__init__(name="feeder", daemon=True)
        self.url = url
        self.healthy = healthy
        self.opts = opts
        self.rnd = rnd
        self.trigger_env = trigger_env
        self.dir = directory
        self.stop = threading.Event()
        self.actions = Counter()
        self.errors = Counter()
        self.quiet_until: dict[str, float] = {}
        self._conn = None
        self._trigger: subprocess.Popen | None = None
        self._trigger_model: str | None = None
        self.triggers_failed: list[str] = []
        self.fired = 0
        self.fired_failing = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = _connect(self.url, "feeder")
                self.tick(self._conn)
            except psycopg.Error as exc:
                # The server restarting, our connection cut: try again.
                self.errors[type(exc).__name__] += 1
                self._close()
                self.stop.wait(0.5)
                continue
            self.stop.wait(self.opts.feed_interval)
        self._reap_trigger(wait=True)
        self._close()

    def _close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def tick(self, conn) -> None:
        self._reap_trigger()
        rnd = self.rnd
        now = time.monotonic()
        # Fresh rows for a model: labelled, no prediction (fire nothing).
        model = rnd.choice(self.healthy)
        copy_rows(conn, [_row(rnd, model, prediction=None) for _ in range(10)])
        pending = {r[0] for r in conn.execute(
            "SELECT model_name FROM retrain_events WHERE status = 'pending'")}
        if rnd.random() < 0.12:
            # A firing that merges into a pending event (or makes one).
            candidates = sorted(pending) or self.healthy
            self.fire(conn, rnd.choice(candidates), rnd.choice(
                ["error_rate_row", "performance", "drift", "manual"]), merge=True)
            return
        # Retrains of the failing models end at once: fire on them for about
        # fail_share of the firings, or they would outnumber the others.
        if self.fired_failing < self.opts.fail_share * (self.fired + 1):
            model = rnd.choice(FAILING)
        else:
            free = [m for m in self.healthy
                    if m not in pending and self.quiet_until.get(m, 0) < now]
            if not free:
                return
            model = rnd.choice(free)
        if model in pending or self.quiet_until.get(model, 0) >= now:
            return
        names = list(ACTIONS)
        action = rnd.choices(names, weights=[ACTIONS[a] for a in names])[0]
        if model in FAILING and action in ("quiet", "error_rate_window"):
            action = "error_rate_row"
        if self.fire(conn, model, action):
            self.fired += 1
            self.fired_failing += model in FAILING

    def fire(self, conn, model: str, action: str, merge: bool = False) -> bool:
        """Make the model's condition for ``action`` fire; False if it could not."""
        rnd = self.rnd
        labelled = model != "sparse"   # sparse must stay short of min_training_rows
        label = "yes" if model == "oneclass" else None
        if action == "quiet":
            self.quiet_until[model] = time.monotonic() + self.opts.schedule_seconds * 1.5
        elif action == "error_rate_row":
            copy_rows(conn, [_row(rnd, model, label=label, error_rate=round(rnd.uniform(0.3, 0.9), 3),
                                  labelled=labelled)])
        elif action == "error_rate_window":
            rows = [_row(rnd, model, label=label, prediction="wrong" if i % 10 < 3 else "right")
                    for i in range(30)]
            rnd.shuffle(rows)
            copy_rows(conn, rows)
        elif action == "performance":
            self._metric(conn, model, accuracy=round(rnd.uniform(0.1, 0.45), 3))
        elif action == "accuracy_drop":
            with conn.transaction():
                self._metric(conn, model, accuracy=0.97)
                self._metric(conn, model, accuracy=round(rnd.uniform(0.55, 0.65), 3))
        elif action == "drift_and_accuracy":
            self._metric(conn, model, accuracy=0.9, drift_score=round(rnd.uniform(0.3, 1.0), 3))
        elif action == "drift":
            self._metric(conn, model, accuracy=0.97, drift_score=round(rnd.uniform(0.3, 1.0), 3))
        elif action == "manual":
            if self._trigger is not None:   # one `worker trigger` at a time
                return False
            self._trigger = subprocess.Popen(
                [*worker_command(), "trigger", model], cwd=self.dir, env=self.trigger_env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # Nothing else fires on the model until the command has run (it
            # takes a second or two to start), so that its event is manual's.
            self._trigger_model = model
            self.quiet_until[model] = float("inf")
        self.actions[f"{action}{' (merge)' if merge else ''}"] += 1
        return True

    @staticmethod
    def _metric(conn, model, accuracy=None, drift_score=None):
        conn.execute("INSERT INTO model_metrics (model_name, accuracy, drift_score) "
                     "VALUES (%s, %s, %s)", (model, accuracy, drift_score))

    def _reap_trigger(self, wait: bool = False) -> None:
        if self._trigger is None:
            return
        if wait:
            try:
                self._trigger.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._trigger.kill()
                self._trigger.wait()
        if self._trigger.poll() is None:
            return
        out, err = self._trigger.communicate()
        if self.quiet_until.get(self._trigger_model) == float("inf"):
            self.quiet_until[self._trigger_model] = 0
        if self._trigger.returncode != 0:
            # The server restarting or the connection cut under it: a user
            # would run it again; so would the next tick.
            self.triggers_failed.append(err.strip().splitlines()[-1] if err.strip() else "?")
        self._trigger = None


# ---------------------------------------------------------------------------
# The soak
# ---------------------------------------------------------------------------


@dataclass
class Report:
    options: Options
    workdir: Path
    events: list = field(default_factory=list)               # dict rows
    kills: list = field(default_factory=list)                # (phase, event_id, worker)
    terminations: list = field(default_factory=list)         # backends terminated per round
    freezes: list = field(default_factory=list)              # (worker, event, from, to)
    fenced: list = field(default_factory=list)               # overlaps a freeze explains
    restarts: int = 0
    restart_seconds: list = field(default_factory=list)
    feed: Counter = field(default_factory=Counter)
    feed_errors: Counter = field(default_factory=Counter)
    triggers_failed: list = field(default_factory=list)
    claims: int = 0
    takeovers: int = 0
    retries: int = 0
    db_attempts: int = 0
    merged: list = field(default_factory=list)               # (cancelled id, into id)
    bad_cancelled: list = field(default_factory=list)
    failed_without_error: list = field(default_factory=list)
    unfinished: list = field(default_factory=list)
    runs: Counter = field(default_factory=Counter)           # kind -> count
    orphans: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    double: list = field(default_factory=list)
    disagreements: list = field(default_factory=list)
    champions: dict = field(default_factory=dict)            # model -> (db, alias)
    stop_exits: list = field(default_factory=list)           # (worker, how, exit code)
    died: list = field(default_factory=list)                 # (worker, exit code, last line)
    tracebacks: list = field(default_factory=list)           # (worker, first line)
    drained: bool = False
    wall: float = 0.0
    feed_seconds: float = 0.0
    drain_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.drained:
            found.append("the queue did not drain")
        for name in ("unfinished", "bad_cancelled", "failed_without_error", "lost", "double",
                     "orphans", "disagreements"):
            if getattr(self, name):
                found.append(f"{name}: {len(getattr(self, name))}")
        bad_exits = [e for e in self.stop_exits if e[2] != 0]
        if bad_exits:
            found.append(f"workers that did not stop cleanly: {bad_exits}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def _plan(opts: Options, rnd: random.Random) -> list[tuple[float, str]]:
    """(progress 0..1 at which to act, action), in order."""
    plan = []
    for i in range(opts.kills):
        plan.append(((i + rnd.uniform(0.2, 0.8)) / max(opts.kills, 1) * 0.95, "kill"))
    for i in range(opts.terminations):
        plan.append(((i + rnd.uniform(0.3, 0.7)) / max(opts.terminations, 1) * 0.9, "terminate"))
    for i in range(opts.freezes):
        plan.append(((i + rnd.uniform(0.3, 0.7)) / max(opts.freezes, 1) * 0.9, "freeze"))
    for i in range(opts.restarts):
        plan.append(((i + rnd.uniform(0.4, 0.6)) / max(opts.restarts, 1) * 0.9, "restart"))
    return sorted(plan)


class Soak:
    def __init__(self, opts: Options):
        self.opts = opts
        self.rnd = random.Random(opts.seed)
        self.server: Server | None = None
        self.workers: Workers | None = None
        self.feeder: Feeder | None = None
        self.url = ""
        self.tracking_uri = ""
        self._conn = None
        self.healthy = [f"m{i}" for i in range(opts.models)]
        if opts.workdir:
            self.dir = Path(opts.workdir).resolve()
            self.dir.mkdir(parents=True, exist_ok=True)
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="pg-retrain-chaos-"))
        self.dir.chmod(0o755)   # the server user walks into it
        self.report = Report(options=opts, workdir=self.dir)

    # -- the database, robustly ----------------------------------------------

    def q(self, query: str, params=None) -> list:
        """Run a query on the soak's own connection, reconnecting (the server
        may be restarting) for up to a minute."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = _connect(self.url, "control")
                cur = self._conn.execute(query, params)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                time.sleep(0.3)

    # -- set-up --------------------------------------------------------------

    def setup(self) -> None:
        from worker import migrate

        opts = self.opts
        if opts.database_url:
            if opts.restarts:
                raise ChaosError("--restarts needs the soak's own server (no --database-url)")
            self.url = opts.database_url
        else:
            say(f"starting a PostgreSQL cluster in {self.dir / 'server'}")
            self.server = Server(self.dir / "server")
            self.server.start()
            with _connect(self.server.admin_url, "setup") as admin:
                admin.execute("CREATE DATABASE chaos")
            self.url = self.server.admin_url.rsplit("/", 1)[0] + "/chaos"
        migrate.upgrade(self.url)
        self.tracking_uri = opts.tracking_uri or f"sqlite:///{self.dir / 'mlflow.db'}"
        import mlflow

        # Created once here, not by the workers racing each other.
        mlflow.MlflowClient(self.tracking_uri, self.tracking_uri).search_experiments(max_results=1)
        with _connect(self.url, "setup") as conn:
            setup_data(conn, opts, self.healthy, self.rnd)
        env = dict(os.environ)
        env.update({"DATABASE_URL": self.url, "MLFLOW_TRACKING_URI": self.tracking_uri,
                    "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore",
                    "OMP_NUM_THREADS": "1", "PGAPPNAME": WORKER_APP})
        args = ["--heartbeat-interval", str(opts.heartbeat_interval),
                "--stale-after", str(opts.stale_after), "--retry-delay", str(opts.retry_delay),
                "--poll-interval", "1", "--schedule-interval", "1", "--drift-interval", "1"]
        self.workers = Workers(self.dir, env, args, opts.workers)
        self.trigger_env = dict(env, PGAPPNAME=f"{APP}-trigger")

    # -- chaos ----------------------------------------------------------------

    def phase_of(self, inc: Incarnation, event_id: int) -> str:
        """What the worker was doing with the event, by its log."""
        inc.read()
        phase = "claimed"
        for _, _, message, _ in inc.lines:
            m = CLAIMED.match(message)
            if m and int(m.group(1)) == event_id:
                phase = "loading"
            elif (m := LOADED.match(message)) and int(m.group(1)) == event_id:
                phase = "training"
            elif (m := DECIDED.match(message)) and int(m.group(1)) == event_id:
                phase = "writing MLflow"
            elif (m := WRITTEN.match(message)) and int(m.group(1)) == event_id:
                phase = "recording"
            elif any(p.match(message) and int(p.match(message).group(1)) == event_id
                     for p, _ in ENDS):
                phase = "after the event"
        return phase

    def training_worker(self, timeout: float = 20):
        """(worker, event) of a live worker that trains an event now, a
        random moment after it loaded its rows; (None, None) if none did
        within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for eid, worker_id in self.q(
                    "SELECT id, worker_id FROM retrain_events WHERE status = 'running' "
                    "AND heartbeat_at > clock_timestamp() - %s * interval '1 second' "
                    "ORDER BY random()", (self.opts.stale_after * 0.6,)):
                inc = self.workers.by_worker_id(worker_id)
                if inc is not None and self.phase_of(inc, eid) == "training":
                    time.sleep(self.rnd.uniform(0, 0.4))
                    # It may have finished that event and claimed the next.
                    return inc, self.running_event(inc)
            time.sleep(0.03)
        return None, None

    def running_event(self, inc: Incarnation) -> int | None:
        rows = self.q("SELECT id FROM retrain_events WHERE status = 'running' AND worker_id = %s",
                      (f"{socket.gethostname()}:{inc.pid}",))
        return rows[0][0] if rows else None

    def freeze(self) -> None:
        """SIGSTOP a worker that trains, past --stale-after, then SIGCONT:
        another worker takes its event over meanwhile; thawed, the frozen
        one must leave no trace (no second outcome, no unmarked run)."""
        victim, event_id = self.training_worker()
        if victim is None:
            say("freeze: no worker was training; skipped")
            return
        started = time.time()
        os.kill(victim.pid, signal.SIGSTOP)
        event_id = self.running_event(victim)
        say(f"SIGSTOP {victim.name} (pid {victim.pid}) "
            + (f"{self.phase_of(victim, event_id)}, event {event_id}" if event_id else "idle"))
        time.sleep(self.opts.stale_after + 3)
        os.kill(victim.pid, signal.SIGCONT)
        self.report.freezes.append((victim.name, event_id, started, time.time()))
        say(f"SIGCONT {victim.name}")

    def kill(self) -> None:
        opts = self.opts
        victim, event_id = None, None
        if self.rnd.random() < opts.training_kills:
            victim, event_id = self.training_worker()
        if victim is None:
            live = self.workers.live()
            if not live:
                return
            victim = self.rnd.choice(live)
        # Stopped first, so that what it was doing can be read before it dies.
        os.kill(victim.pid, signal.SIGSTOP)
        event_id = self.running_event(victim)
        phase = self.phase_of(victim, event_id) if event_id is not None else "idle"
        self.workers.kill(victim)
        self.report.kills.append((phase, event_id, victim.name))
        say(f"SIGKILL {victim.name} (pid {victim.pid}) {phase}"
            + (f", event {event_id}" if event_id else ""))
        # Restarted at once: a process manager would.
        self.workers.start(victim.slot)

    def terminate(self) -> None:
        [(count,)] = self.q(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s "
            "AND pid <> pg_backend_pid()", (WORKER_APP,))
        self.report.terminations.append(count)
        say(f"pg_terminate_backend: {count} worker connections")

    def restart_server(self) -> None:
        started = time.monotonic()
        if self._conn is not None:
            self._conn.close()
        self.server.restart(self.opts.outage)
        self.report.restarts += 1
        self.report.restart_seconds.append(time.monotonic() - started)
        say(f"PostgreSQL restarted ({time.monotonic() - started:.1f}s)")

    # -- phases ---------------------------------------------------------------

    def feed_and_break(self) -> None:
        opts = self.opts
        started = time.monotonic()
        self.workers.start_all()
        self.workers.wait_listening(self.workers.live(), timeout=180)
        say(f"{opts.workers} workers listening; feeding {opts.events} events")
        self.feeder = Feeder(self.url, self.healthy, opts, random.Random(opts.seed + 1),
                             self.trigger_env, self.dir)
        self.feeder.start()
        plan = _plan(opts, self.rnd)
        last_progress = 0.0
        while True:
            [(recorded,)] = self.q("SELECT count(*) FROM retrain_events")
            progress = recorded / max(opts.events, 1)
            while plan and plan[0][0] <= progress:
                _, action = plan.pop(0)
                {"kill": self.kill, "terminate": self.terminate, "freeze": self.freeze,
                 "restart": self.restart_server}[action]()
            for slot, inc in self.workers.slots.items():   # died on its own?
                if not inc.alive() and inc.how is None:
                    inc.how, inc.ended, inc.exit_code = "died", time.time(), inc.proc.poll()
                    say(f"worker {inc.name} exited by itself ({inc.exit_code}): restarting")
                    self.workers.start(slot)
            elapsed = time.monotonic() - started
            if recorded >= opts.events and not plan:
                break
            if elapsed > opts.duration:
                say(f"--duration {opts.duration:.0f}s reached with {recorded} events; "
                    f"{len(plan)} chaos actions not done")
                break
            if time.monotonic() - last_progress > 10:
                last_progress = time.monotonic()
                counts = dict(self.q("SELECT status, count(*) FROM retrain_events GROUP BY 1"))
                say(f"{elapsed:5.0f}s  events {recorded}/{opts.events}  {counts}  "
                    f"kills {len(self.report.kills)}")
            time.sleep(0.2)
        self.feeder.stop.set()
        self.feeder.join(timeout=120)
        self.report.feed = self.feeder.actions
        self.report.feed_errors = self.feeder.errors
        self.report.triggers_failed = self.feeder.triggers_failed
        self.report.feed_seconds = time.monotonic() - started

    def drain(self) -> None:
        started = time.monotonic()
        # Nothing new from now on: no schedules (the drift monitor sees no new rows).
        self.q("UPDATE retrain_policies SET schedule_interval = NULL")
        for slot, inc in self.workers.slots.items():
            if not inc.alive():
                if inc.how is None:
                    inc.how, inc.ended, inc.exit_code = "died", time.time(), inc.proc.poll()
                self.workers.start(slot)
        say("draining")
        deadline = time.monotonic() + self.opts.drain_timeout
        last = 0.0
        while time.monotonic() < deadline:
            left = self.q("SELECT status, count(*) FROM retrain_events "
                          "WHERE status IN ('pending', 'running') GROUP BY 1")
            if not left:
                self.report.drained = True
                break
            # A pending event may be deferred on purpose (a retry's delay, the
            # futile backoff): the timeout counts from when it is due.
            [(wait,)] = self.q("SELECT extract(epoch FROM max(run_after) - now()) "
                               "FROM retrain_events WHERE status = 'pending'")
            if wait is not None and wait > 0:
                deadline = max(deadline, time.monotonic() + float(wait) + self.opts.drain_timeout)
            if time.monotonic() - last > 10:
                last = time.monotonic()
                say(f"draining: {dict(left)} left"
                    + (f", the last due in {float(wait):.0f}s" if wait and wait > 0 else ""))
            time.sleep(0.3)
        self.report.drain_seconds = time.monotonic() - started
        say("stopping the workers (SIGTERM)")
        self.workers.stop_all()

    # -- checks ---------------------------------------------------------------

    def check(self) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from worker.tracking import registered_name

        report = self.report
        with _connect(self.url, "check") as conn:
            cur = conn.cursor(row_factory=dict_row)
            report.events = cur.execute("SELECT * FROM retrain_events ORDER BY id").fetchall()
            champions = dict(conn.execute(
                "SELECT model_name, champion_version FROM model_status").fetchall())
        by_id = {e["id"]: e for e in report.events}
        report.db_attempts = sum(e["attempts"] for e in report.events)

        for e in report.events:
            if e["status"] in ("pending", "running"):
                report.unfinished.append((e["id"], e["model_name"], e["status"], e["worker_id"]))
            elif e["status"] == "failed" and not e["error"]:
                report.failed_without_error.append(e["id"])
            elif e["status"] == "cancelled":
                m = re.search(r"\(merged into event (\d+)\)$", e["error"] or "")
                into = by_id.get(int(m.group(1))) if m else None
                if into is None or into["id"] <= e["id"] or not set(e["reasons"]) <= set(into["reasons"]):
                    report.bad_cancelled.append((e["id"], e["error"]))
                else:
                    report.merged.append((e["id"], into["id"]))

        # Attempts, by the workers' logs.
        attempts = []   # dicts: event, attempt, worker, start, end, outcome
        overlaps = []   # (event, attempt, attempt) overlapping in time
        for inc in self.workers.all:
            inc.read()
            current: dict[int, dict] = {}
            last_time = inc.started
            for when, level, message, tb in inc.lines:
                if when is not None:
                    last_time = when
                if tb:
                    report.tracebacks.append((inc.name, tb.strip().splitlines()[-1]))
                if (m := CLAIMED.match(message)):
                    a = {"event": int(m.group(1)), "attempt": int(m.group(4)),
                         "worker": inc.name, "start": when, "end": None, "outcome": None}
                    current[a["event"]] = a
                    attempts.append(a)
                    continue
                for pattern, outcome in ENDS:
                    if (m := pattern.match(message)) and int(m.group(1)) in current:
                        a = current.pop(int(m.group(1)))
                        a["end"], a["outcome"] = when, outcome
                        break
                else:
                    if LOOP_ENDS.match(message):
                        for a in current.values():
                            a["end"], a["outcome"] = when, "interrupted"
                        current.clear()
            for a in current.values():
                a["end"] = inc.ended or last_time
                a["outcome"] = "killed" if inc.how == "killed" else f"open ({inc.how})"
        report.claims = len(attempts)
        report.retries = sum(1 for a in attempts if a["outcome"] == "retry")
        by_event = defaultdict(list)
        for a in attempts:
            by_event[a["event"]].append(a)
        for event_id, tries in by_event.items():
            tries.sort(key=lambda a: a["start"])
            for previous, a in zip(tries, tries[1:]):
                if previous["outcome"] in ("killed", "interrupted") or previous["outcome"].startswith("open"):
                    report.takeovers += 1
            for i, a in enumerate(tries):
                for b in tries[i + 1:]:
                    if a["worker"] != b["worker"] and a["start"] < b["end"] and b["start"] < a["end"]:
                        overlaps.append((event_id, a, b))

        # MLflow runs.
        client = MlflowClient(self.tracking_uri, self.tracking_uri)
        runs = []
        for experiment in client.search_experiments():
            token = None
            while True:
                page = client.search_runs([experiment.experiment_id], max_results=1000,
                                          page_token=token)
                runs.extend(page)
                token = page.token
                if not token:
                    break
        recorded = {e["mlflow_run_id"]: e for e in report.events if e["mlflow_run_id"]}
        run_ids = {r.info.run_id: r for r in runs}
        for e in report.events:
            if e["status"] == "succeeded":
                run = run_ids.get(e["mlflow_run_id"])
                if run is None:
                    report.lost.append(f"event {e['id']}: run {e['mlflow_run_id']} not in MLflow")
                elif run.info.status != "FINISHED":
                    report.lost.append(f"event {e['id']}: run {e['mlflow_run_id']} is "
                                       f"{run.info.status}")
                elif run.data.params.get("event_id") != str(e["id"]):
                    report.lost.append(f"event {e['id']}: its run {e['mlflow_run_id']} is event "
                                       f"{run.data.params.get('event_id')}'s")
        runs_of_event = defaultdict(list)
        for run in runs:
            tags = run.data.tags
            event_id = run.data.params.get("event_id")
            runs_of_event[event_id].append(run)
            if run.info.run_id in recorded:
                kind = "recorded"
                if tags.get("pg_retrain.abandoned") == "true":
                    report.lost.append(f"run {run.info.run_id} is recorded by event "
                                       f"{recorded[run.info.run_id]['id']} and tagged abandoned")
            elif tags.get("pg_retrain.abandoned") == "true":
                kind = "abandoned"
            elif run.info.status == "KILLED":
                kind = "killed"
            else:
                kind = "orphaned"
                tries = [a for a in by_event.get(int(event_id), [])
                         if str(a["attempt"]) == tags.get("pg_retrain.attempt")
                         and self._worker_name(tags.get("pg_retrain.worker_id")) == a["worker"]]
                report.orphans.append(
                    f"run {run.info.run_id} ({run.info.status}) of event {event_id} attempt "
                    f"{tags.get('pg_retrain.attempt', '?')} by "
                    f"{self._worker_name(tags.get('pg_retrain.worker_id'))}: that attempt ended "
                    f"{tries[0]['outcome'] if tries else '?'}; the event is "
                    f"{by_id[int(event_id)]['status'] if int(event_id) in by_id else '?'} with "
                    f"run {by_id[int(event_id)]['mlflow_run_id'] if int(event_id) in by_id else '?'}")
            report.runs[kind] += 1
        for event_id, event_runs in runs_of_event.items():
            spans = sorted((r.info.start_time, r.info.end_time or float("inf"), r)
                           for r in event_runs)
            for i, (s1, e1, r1) in enumerate(spans):
                for s2, e2, r2 in spans[i + 1:]:
                    if s2 < e1 and s1 < e2:
                        report.double.append(
                            f"event {event_id}: MLflow runs {r1.info.run_id} and {r2.info.run_id} "
                            "overlap in time [MLflow]")
            seen = Counter(r.data.tags.get("pg_retrain.attempt") for r in event_runs)
            for attempt, n in seen.items():
                if attempt is not None and n > 1:
                    report.double.append(f"event {event_id}: {n} MLflow runs of attempt {attempt}")

        # Overlapping attempts by the logs. One explained by a freeze (the
        # frozen attempt was taken over meanwhile, then gave up by itself and
        # left no run but one marked abandoned) is the fencing working: it is
        # listed apart. Any other is an event run twice at once.
        for event_id, a, b in overlaps:
            frozen = [f for f in report.freezes
                      if f[0] == a["worker"] and f[2] < a["end"] and f[3] > a["start"]
                      and f[2] < b["start"]]
            own_runs = [r for r in runs_of_event.get(str(event_id), [])
                        if r.data.tags.get("pg_retrain.attempt") == str(a["attempt"])
                        and self._worker_name(r.data.tags.get("pg_retrain.worker_id")) == a["worker"]]
            text = (f"event {event_id}: attempt {a['attempt']} by {a['worker']} ({a['outcome']}) "
                    f"overlaps attempt {b['attempt']} by {b['worker']} ({b['outcome']})")
            if frozen and a["outcome"] == "lost" and all(
                    r.data.tags.get("pg_retrain.abandoned") == "true" for r in own_runs):
                report.fenced.append(text + f"; {a['worker']} was frozen, then gave up"
                                     + (" (its run marked abandoned)" if own_runs else
                                        " before writing a run"))
            else:
                report.double.append(text + " [logs]")

        # The champion alias follows the database.
        for model in sorted(champions):
            try:
                alias = str(client.get_model_version_by_alias(registered_name(model),
                                                              "champion").version)
            except MlflowException:
                alias = None
            db = champions[model]
            report.champions[model] = (db, alias)
            if (db and str(db)) != alias:
                report.disagreements.append(f"model {model}: database champion {db}, "
                                            f"MLflow alias {alias}")

        for inc in self.workers.all:
            if inc.how and inc.how.startswith("stopped"):
                report.stop_exits.append((inc.name, inc.how, inc.exit_code))
            elif inc.how == "died":
                last = inc.lines[-1][2] if inc.lines else ""
                report.died.append((inc.name, inc.exit_code, last))

    def _worker_name(self, worker_id: str | None) -> str:
        for inc in self.workers.all:
            if inc.owns(worker_id):
                return inc.name
        return str(worker_id)

    # -- all of it ------------------------------------------------------------

    def run(self) -> Report:
        started = time.monotonic()
        try:
            self.setup()
            self.feed_and_break()
            self.drain()
            self.check()
        finally:
            if self.workers is not None:
                for inc in self.workers.all:
                    if inc.alive():
                        inc.proc.kill()
                        inc.proc.wait(timeout=30)
            if self.feeder is not None:
                self.feeder.stop.set()
            if self._conn is not None:
                self._conn.close()
            if self.server is not None:
                self.server.stop()
            self.report.wall = time.monotonic() - started
        return self.report


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def render(report: Report) -> str:
    opts = report.options
    lines = []
    out = lines.append
    out(f"pg-retrain chaos soak: {opts.workers} workers, {opts.models} healthy models + "
        f"{len(FAILING)} failing, seed {opts.seed}")
    out("")
    counts = Counter((e["reason"], e["status"]) for e in report.events)
    header = f"{'events by reason':<20}" + "".join(f"{s:>11}" for s in STATUSES) + f"{'total':>8}"
    out(header)
    out("-" * len(header))
    for reason in REASONS:
        row = [counts[(reason, s)] for s in STATUSES]
        out(f"{reason:<20}" + "".join(f"{n:>11}" for n in row) + f"{sum(row):>8}")
    totals = [sum(counts[(r, s)] for r in REASONS) for s in STATUSES]
    out(f"{'total':<20}" + "".join(f"{n:>11}" for n in totals) + f"{sum(totals):>8}")
    out("")
    kill_phases = Counter(k[0] for k in report.kills)
    runs = report.runs
    rows = [
        ("cancelled = merged into a newer pending event",
         f"{len(report.merged)} of {sum(1 for e in report.events if e['status'] == 'cancelled')}"),
        ("failed with an error", f"{sum(1 for e in report.events if e['status'] == 'failed') - len(report.failed_without_error)}"
                                 f" of {sum(1 for e in report.events if e['status'] == 'failed')}"),
        ("SIGKILLs (then restarted)",
         f"{len(report.kills)} of {opts.kills}: "
         + ", ".join(f"{n} {p}" for p, n in kill_phases.most_common())),
        ("connection terminations",
         f"{len(report.terminations)} rounds, {sum(report.terminations)} worker connections"),
        ("SIGSTOP freezes past --stale-after",
         f"{len(report.freezes)}, overlaps they explain (frozen attempt gave up): "
         f"{len(report.fenced)}"),
        ("PostgreSQL restarts", f"{report.restarts}"
         + (f" ({', '.join(f'{s:.1f}s' for s in report.restart_seconds)})" if report.restarts else "")),
        ("attempts (claims in the logs)", f"{report.claims}"),
        ("  attempts (sum in retrain_events; merges add theirs)", f"{report.db_attempts}"),
        ("  takeovers of a dead or cut-off attempt", f"{report.takeovers}"),
        ("  retried after an error", f"{report.retries}"),
        ("MLflow runs", f"{sum(runs.values())}"),
        ("  recorded by their event", f"{runs['recorded']}"),
        ("  tagged abandoned", f"{runs['abandoned']}"),
        ("  ended KILLED by reconcile", f"{runs['killed']}"),
        ("  orphaned", f"{runs['orphaned']}"),
        ("left pending/running", f"{len(report.unfinished)}"),
        ("lost", f"{len(report.lost)}"),
        ("double (overlapping attempts)", f"{len(report.double)}"),
        ("champion disagreements", f"{len(report.disagreements)} of {len(report.champions)} models"),
        ("workers that exited by themselves (restarted)", f"{len(report.died)}"),
        ("workers stopped by SIGTERM, exit 0",
         f"{sum(1 for e in report.stop_exits if e[2] == 0)} of {len(report.stop_exits)}"),
        ("tracebacks in the worker logs", f"{len(report.tracebacks)}"),
        ("wall time", f"{report.wall:.0f}s (feeding and chaos {report.feed_seconds:.0f}s, "
                      f"drain {report.drain_seconds:.0f}s)"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    for name, value in rows:
        out(f"{name:<{width}}{value}")
    out("")
    failed = Counter(_error_kind(e["error"]) for e in report.events if e["status"] == "failed")
    if failed:
        out("failed, by error: " + "; ".join(f"{n} {k}" for k, n in failed.most_common()))
    out("fed: " + ", ".join(f"{k} {v}" for k, v in sorted(report.feed.items())))
    if report.feed_errors:
        out("feeder errors (retried): " + ", ".join(f"{k} {v}" for k, v in report.feed_errors.items()))
    if report.triggers_failed:
        out(f"`worker trigger` runs that failed (retried later): {len(report.triggers_failed)}")
    if report.merged:
        out("cancelled events, each merged into a newer pending event: "
            + ", ".join(f"{a}->{b}" for a, b in report.merged[:20])
            + (" ..." if len(report.merged) > 20 else ""))
    for item in report.fenced:
        out(f"fenced: {item}")
    details = [("NOT FINISHED", report.unfinished), ("BAD CANCELLED", report.bad_cancelled),
               ("FAILED WITHOUT ERROR", report.failed_without_error), ("LOST", report.lost),
               ("DOUBLE", report.double), ("ORPHANED", report.orphans),
               ("DISAGREEMENT", report.disagreements)]
    for title, items in details:
        for item in items:
            out(f"{title}: {item}")
    for name, code, last in report.died:
        out(f"worker {name} exited by itself ({code}): {last}")
    for name, tb in report.tracebacks[:10]:
        out(f"traceback in {name}: {tb}")
    out("")
    out("result: " + ("every check passed" if report.ok else "FAILED: " + "; ".join(report.problems)))
    return "\n".join(lines)


def _error_kind(error: str | None) -> str:
    """An event's error without its numbers: errors of one kind group."""
    if not error:
        return "(no error)"
    text = re.sub(r"\(merged into event \d+\)|\d+(\.\d+)?", "N", error.split(":")[0]
                  if error.startswith(("OperationalError", "AdminShutdown")) else error)
    return text[:90]


def parse_args(argv=None) -> Options:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workers", type=int, default=defaults.workers, help="worker processes [%(default)s]")
    add("--models", type=int, default=defaults.models,
        help="healthy models, besides the two whose retrains fail [%(default)s]")
    add("--events", type=int, default=defaults.events,
        help="events to record before the chaos stops [%(default)s]")
    add("--duration", type=float, default=defaults.duration,
        help="seconds after which feeding stops whatever was reached [%(default)s]")
    add("--kills", type=int, default=defaults.kills, help="SIGKILLs [%(default)s]")
    add("--training-kills", type=float, default=defaults.training_kills,
        help="share of the kills aimed at a worker that trains [%(default)s]")
    add("--terminations", type=int, default=defaults.terminations,
        help="rounds of pg_terminate_backend on every worker connection [%(default)s]")
    add("--restarts", type=int, default=defaults.restarts,
        help="PostgreSQL restarts [%(default)s]")
    add("--freezes", type=int, default=defaults.freezes,
        help="SIGSTOPs of a training worker for --stale-after + 3 s [%(default)s]")
    add("--outage", type=float, default=defaults.outage,
        help="seconds PostgreSQL stays down in each restart (more than --stale-after: "
             "every running event's heartbeat goes stale meanwhile) [%(default)s]")
    add("--rows", type=int, default=defaults.rows,
        help="labelled rows of m0 at the start (m1 twice as many, ...) [%(default)s]")
    add("--max-training-rows", type=int, default=defaults.max_training_rows)
    add("--schedule-seconds", type=int, default=defaults.schedule_seconds,
        help="schedule_interval of the healthy models [%(default)s]")
    add("--fail-share", type=float, default=defaults.fail_share,
        help="share of the firings aimed at the models whose retrains fail [%(default)s]")
    add("--heartbeat-interval", type=float, default=defaults.heartbeat_interval)
    add("--stale-after", type=float, default=defaults.stale_after)
    add("--retry-delay", type=float, default=defaults.retry_delay)
    add("--drain-timeout", type=float, default=defaults.drain_timeout)
    add("--seed", type=int, default=defaults.seed)
    add("--database-url", help="use this database instead of a cluster of the soak's own "
                               "(no --restarts then)")
    add("--tracking-uri", help="MLflow store [sqlite:///<work directory>/mlflow.db]")
    add("--workdir", type=Path, help="work directory [a new temporary one]")
    add("--keep", action="store_true", help="keep the work directory even when all is well")
    args = parser.parse_args(argv)
    return Options(**{k: v for k, v in vars(args).items()})


def main(argv=None) -> int:
    opts = parse_args(argv)
    soak = Soak(opts)
    try:
        report = soak.run()
    except ChaosError as exc:
        print(f"chaos: error: {exc} (work directory {soak.dir})", file=sys.stderr)
        return 2
    print(render(report), flush=True)
    if report.ok and not opts.keep and not opts.workdir:
        shutil.rmtree(soak.dir, ignore_errors=True)
    else:
        print(f"work directory (worker logs, server log, MLflow store): {soak.dir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
