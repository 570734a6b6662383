#!/usr/bin/env python3
"""CPU instructions per single-row INSERT, triggers on vs off, counted.

Wall-clock ratios on a shared two-core machine move 10-30% between runs;
instruction counts do not. This script counts the instructions a PostgreSQL
backend executes per single-row INSERT statement (each its own transaction),
with valgrind's callgrind, on a throwaway cluster:

    python bench/insert_instructions.py            # needs valgrind, initdb, postgres

It initdb's a cluster in a temporary directory (as the `postgres` OS user
when run as root), migrates a database there, then runs a single-user
backend (`postgres --single`) under callgrind for each case, twice (N1 and
N2 measured statements after a warm-up), and reports (Ir(N2) - Ir(N1)) /
(N2 - N1): the instructions of one statement, start-up excluded. Counts
include the statement's trigger work and its executor, not the commit's
WAL flush (synchronous_commit is off), so they measure CPU work only.

Cases (same rows, one model, nine jsonb features):
  off     triggers disabled (DISABLE TRIGGER USER): the baseline
  quiet   every prediction right, error_rate 0.05: nothing can fire
  wrong   every 20th prediction wrong (5%): the window is read on those rows
  fire    error_rate 0.5 on every row: every row extends the pending event

With --copy N, COPY is counted too: one COPY of N rows and one of 2N rows
per case (the difference, per row), with rows made by insert_overhead.py:
copy_off (triggers disabled), copy_quiet (5% wrong predictions),
copy (15% wrong: the rolling window fires), copy_fire (error_rate above the
threshold on every row, 5% wrong).

"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = {
    "off": ("DISABLE", "0.05", None),
    "quiet": ("ENABLE", "0.05", None),
    "wrong": ("ENABLE", "0.05", 20),
    "fire": ("ENABLE", "0.5", None),
}
# COPY loads: (toggle, mismatch, error_rate range), as insert_overhead.py's.
COPY_CASES = {
    "copy_off": ("DISABLE", 0.05, (0.02, 0.08)),
    "copy_quiet": ("ENABLE", 0.05, (0.02, 0.08)),
    "copy": ("ENABLE", 0.15, (0.02, 0.08)),
    "copy_fire": ("ENABLE", 0.05, (0.11, 0.2)),
}
PORT = "5497"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure worth one readable line."""


def bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        path = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                   check=True).stdout.strip())
        if (path / "postgres").exists():
            return path
    initdb = shutil.which("initdb")
    if initdb:
        real = Path(initdb).resolve().parent
        if (real / "postgres").exists():
            return real
    raise BenchError("no PostgreSQL server binaries found (pg_config --bindir, initdb)")


def as_server_user(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run as `postgres` then."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise BenchError("running as root and there is no `postgres` user") from None
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, **kwargs)


def setup_lines(toggle: str) -> list[str]:
    """Triggers on or off, empty tables, the model known (as in any load
    after its first row)."""
    return [
        f"ALTER TABLE training_data {toggle} TRIGGER USER",
        "TRUNCATE training_data, retrain_events RESTART IDENTITY",
        # Schemas before 0.1.0 kept state of their own about models.
        "DO $$ BEGIN IF to_regclass('retrain_window_bounds') IS NOT NULL THEN "
        "TRUNCATE retrain_window_bounds; INSERT INTO retrain_models (model_name) "
        "VALUES ('churn') ON CONFLICT DO NOTHING; END IF; END $$",
    ]


def statements(case: str, rows: int, warmup: int) -> str:
    toggle, error_rate, wrong_every = CASES[case]
    lines = [
        "SET synchronous_commit = off",
        *setup_lines(toggle),
        "PREPARE ins(int, text) AS INSERT INTO training_data "
        "(model_name, features, label, prediction, error_rate) VALUES ('churn', "
        "jsonb_build_object('age', $1, 'income', 36312.5, 'tenure_months', 12, "
        "'balance', 2511.2, 'num_products', 2, 'credit_score', 640, 'region', 'north', "
        f"'plan', 'basic', 'is_active', true), 'stay', $2, {error_rate})",
    ]
    for i in range(warmup + rows):
        wrong = wrong_every and i % wrong_every == wrong_every - 1
        lines.append(f"EXECUTE ins({18 + i % 70}, '{'churn' if wrong else 'stay'}')")
    return "\n".join(lines) + "\n"


def copy_statements(case: str, rows: int, work: Path) -> str:
    """One COPY of `rows` rows from a file, on a freshly truncated table."""
    import insert_overhead as io

    toggle, mismatch, (error_lo, error_hi) = COPY_CASES[case]
    data = work / f"{case}-{rows}.copy"
    data.write_bytes(io.copy_text(io.make_rows(rows, models=["churn"], mismatch=mismatch,
                                               error_lo=error_lo, error_hi=error_hi,
                                               batch=1000, seed=42)))
    data.chmod(0o644)
    return "\n".join([
        "SET synchronous_commit = off",
        *setup_lines(toggle),
        "COPY training_data (model_name, features, label, prediction, error_rate) "
        f"FROM '{data}'",
    ]) + "\n"


def count(binaries: Path, data: Path, work: Path, case: str, rows: int, warmup: int) -> int:
    script = work / f"{case}-{rows}.sql"
    copy = case in COPY_CASES
    script.write_text(copy_statements(case, rows, work) if copy
                      else statements(case, rows, warmup))
    out = work / f"callgrind.{case}.{rows}"
    proc = as_server_user(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         "--collect-atstart=no", f"--toggle-collect={'DoCopy' if copy else 'ExecuteQuery'}",
         str(binaries / "postgres"), "--single", "-D", str(data), "bench"],
        stdin=script.open(), capture_output=True, text=True)
    if proc.returncode != 0 or "ERROR" in proc.stdout:
        detail = next((line for line in (proc.stdout + proc.stderr).splitlines()
                       if "ERROR" in line), proc.stderr.strip().splitlines()[-1:])
        raise BenchError(f"single-user backend failed for {case}: {detail}")
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"no totals in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=100, help="statements in the short run (100)")
    parser.add_argument("--n2", type=int, default=300, help="statements in the long run (300)")
    parser.add_argument("--warmup", type=int, default=300, help="statements before either (300)")
    parser.add_argument("--copy", type=int, default=0, metavar="N",
                        help="also count COPY: N and 2N rows per case (0: no COPY)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise BenchError("valgrind is not installed")
    binaries = bindir()
    work = Path(tempfile.mkdtemp(prefix="pgretrain-instr-"))
    os.chmod(work, 0o777)
    data = work / "data"
    try:
        log(f"initdb in {data} ...")
        as_server_user([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(work / "log"),
                        "-o", f"-p {PORT} -k {work} -c listen_addresses=''", "start"],
                       check=True, capture_output=True)
        try:
            url = f"postgresql://postgres@/bench?host={work}&port={PORT}"
            as_server_user([str(binaries / "createdb"), "-h", str(work), "-p", PORT,
                            "-U", "postgres", "bench"], check=True, capture_output=True)
            log("migrating ...")
            from worker import migrate

            migrate.upgrade(url)
        finally:
            as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-w", "stop"],
                           check=True, capture_output=True)
        per_statement = {}
        for case in CASES:
            log(f"{case}: callgrind, {args.n1} and {args.n2} statements ...")
            short = count(binaries, data, work, case, args.n1, args.warmup)
            long = count(binaries, data, work, case, args.n2, args.warmup)
            per_statement[case] = (long - short) / (args.n2 - args.n1)
        per_copy_row = {}
        for case in (COPY_CASES if args.copy else ()):
            log(f"{case}: callgrind, COPY of {args.copy} and {2 * args.copy} rows ...")
            short = count(binaries, data, work, case, args.copy, 0)
            long = count(binaries, data, work, case, 2 * args.copy, 0)
            per_copy_row[case] = (long - short) / args.copy
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = per_statement["off"]
    version = subprocess.run([str(binaries / "postgres"), "--version"], capture_output=True,
                             text=True).stdout.strip()
    print(f"server: {version}, single-user backend, synchronous_commit off")
    print(f"{'case':<11} {'instructions':>13} {'+ over off':>11} {'ratio':>7}")
    for case, value in per_statement.items():
        print(f"{case:<11} {value:>13,.0f} {value - base:>+11,.0f} {value / base:>6.2f}x")
    if per_copy_row:
        base = per_copy_row["copy_off"]
        print(f"COPY, per row ({args.copy} and {2 * args.copy} rows):")
        for case, value in per_copy_row.items():
            print(f"{case:<11} {value:>13,.0f} {value - base:>+11,.0f} {value / base:>6.2f}x")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
