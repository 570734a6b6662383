"""SPEC section 4: "A bad URL, an unreachable server, or an unknown model
ends with one clear line on stderr and a non-zero exit, never a traceback"
(and so does a bad policy value)."""

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
    "unknown-model-trigger": (["trigger", "no_such_model"], "no_such_model"),
    "unknown-model-metrics-get": (
        ["metrics", "get", "model_accuracy", "--model", "no_such_model"], "no_such_model"),
    "unknown-model-metrics-list": (["metrics", "list", "--model", "no_such_model"],
                                   "no_such_model"),
    "bad-policy-value": (["policy", "set", "known", "min_accuracy=2"], "min_accuracy"),
    "bad-policy-setting": (["policy", "set", "known", "no_such_setting=1"], "no_such_setting"),
}


def test_user_errors_end_with_one_line_and_a_non_zero_exit(conn, run_worker):
    insert_labelled(conn, "known", 5, seed=1)
    names = list(CASES)
    # Side by side: each command is its own process (each imports the CLI).
    results = dict(zip(names, run_worker.many(*(CASES[n][0] for n in names), timeout=120)))

    problems = []
    for name in names:
        args, word = CASES[name]
        r = results[name]
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        if r.returncode == 0:
            problems.append(f"{name}: exit 0")
        if "Traceback" in r.stderr:
            problems.append(f"{name}: traceback on stderr:\n{r.stderr}")
        elif len(lines) != 1:
            problems.append(f"{name}: {len(lines)} lines on stderr:\n{r.stderr}")
        elif word not in lines[0].lower():
            problems.append(f"{name}: {lines[0]!r} does not mention {word!r}")
    assert not problems, "\n".join(problems)

    # Nothing was changed by the refused commands.
    assert conn.execute(
        "SELECT count(*) FROM retrain_policies WHERE model_name = 'known'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM retrain_events").fetchone()[0] == 0
