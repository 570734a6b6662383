"""SPEC section 4: "A bad URL, an unreachable server, or an unknown model
ends with one clear line on stderr and a non-zero exit, never a traceback"
(and so does a bad policy value).

Every error here is one the user can fix: each exits 2 (as click's own usage
errors do), and an unknown model gives the same line whichever command met
it."""

from __future__ import annotations

import pytest

from tests.acceptance.support import insert_labelled

pytestmark = pytest.mark.slow

BAD_URL = "mysql://x"
UNREACHABLE = "postgresql://u@127.0.0.1:1/db"

CASES = {
    "bad-url-status": (["status", "--database-url", BAD_URL], "url"),
    "bad-url-trigger": (["trigger", "known", "--database-url", BAD_URL], "url"),
    "bad-url-run-once": (["run-once", "--database-url", BAD_URL], "url"),
    "unreachable-status": (["status", "--database-url", UNREACHABLE], "connect"),
    "unreachable-listen": (["listen", "--database-url", UNREACHABLE], "connect"),
    "unreachable-migrate": (["migrate", "--database-url", UNREACHABLE], "connect"),
    "bad-policy-value": (["policy", "set", "known", "min_accuracy=2"], "min_accuracy"),
    "bad-policy-setting": (["policy", "set", "known", "no_such_setting=1"], "no_such_setting"),
    "unknown-metric": (["metrics", "get", "no_such_metric", "--model", "known"],
                       "no_such_metric"),
    "db-stop-with-a-url": (["db", "stop"], "database_url is set"),
}

UNKNOWN_MODEL = "error: unknown model 'no_such_model': it has no training data, metrics or policy"
UNKNOWN_MODEL_CASES = {
    "trigger": ["trigger", "no_such_model"],
    "status": ["status", "--model", "no_such_model"],
    "policy-show": ["policy", "show", "no_such_model"],
    "metrics-get": ["metrics", "get", "model_accuracy", "--model", "no_such_model"],
    "metrics-list": ["metrics", "list", "--model", "no_such_model"],
    "plot": ["plot", "no_such_model"],
}


def test_user_errors_end_with_one_line_and_exit_2(conn, run_worker):
    insert_labelled(conn, "known", 5, seed=1)
    commands = {name: args for name, (args, _) in CASES.items()}
    commands.update({f"unknown-model-{name}": args
                     for name, args in UNKNOWN_MODEL_CASES.items()})
    names = list(commands)
    # Side by side: each command is its own process (each imports the CLI).
    results = dict(zip(names, run_worker.many(*commands.values(), timeout=120)))

    problems = []
    for name in names:
        r = results[name]
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        if r.returncode != 2:
            problems.append(f"{name}: exit {r.returncode}")
        if "Traceback" in r.stderr:
            problems.append(f"{name}: traceback on stderr:\n{r.stderr}")
        elif len(lines) != 1:
            problems.append(f"{name}: {len(lines)} lines on stderr:\n{r.stderr}")
        elif name in CASES and CASES[name][1] not in lines[0].lower():
            problems.append(f"{name}: {lines[0]!r} does not mention {CASES[name][1]!r}")
        elif name not in CASES and lines[0] != UNKNOWN_MODEL:
            problems.append(f"{name}: {lines[0]!r} is not {UNKNOWN_MODEL!r}")
    assert not problems, "\n".join(problems)

    # Nothing was changed by the refused commands.
    assert conn.execute(
        "SELECT count(*) FROM retrain_policies WHERE model_name = 'known'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM retrain_events").fetchone()[0] == 0


def test_a_known_model_without_runs_has_no_metrics_yet(conn, run_worker):
    insert_labelled(conn, "known", 5, seed=1)
    listed = run_worker("metrics", "list", "--model", "known")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "", "")
