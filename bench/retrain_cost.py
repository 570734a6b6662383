"""What one retrain's training costs, in time and memory, at 10k, 100k and
1M rows (the policy's max_training_rows raised to match).

Each size runs in a fresh process (so that its peak RSS is its own) and
times ``training.challenge`` on rows shaped like an ETL feed (nine
features: six numbers, two categories, a boolean, some nulls and absent
keys; a label with 10% noise; served predictions), followed by the drift
baseline of the registered window - everything a retrain does between
loading the rows and talking to MLflow. Not included: the database load
(bench/load_rows.py) and MLflow logging.

    python bench/retrain_cost.py [--sizes 10000,100000,1000000] [--estimator auto]
        [--scenario stationary|change]

Columns: wall seconds of challenge and of the baseline; peak RSS of the
process (MB, ru_maxrss, with the rows themselves) and its growth during the
retrain; Python's traced peak (tracemalloc, a second run: numpy and pandas
buffers are traced, scikit-learn's C++ ones mostly not).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rows(n: int, scenario: str, seed: int = 1):
    """COPY text lines of (id, features, label, prediction), oldest first."""
    rng = random.Random(seed)
    lines = []
    change = n - 1000 if scenario == "change" else None
    for i in range(n):
        f = {"amount": round(rng.lognormvariate(3, 1), 2), "age": rng.randint(18, 90),
             "score": round(rng.gauss(0, 1), 4), "ratio": round(rng.random(), 4),
             "visits": rng.randint(0, 40), "balance": round(rng.uniform(-500, 5000), 2),
             "country": rng.choice(["CH", "DE", "FR", "IT", "AT"]),
             "channel": rng.choice(["web", "app", "shop"]), "vip": rng.random() < 0.2}
        if rng.random() < 0.05:
            f["score"] = None
        if rng.random() < 0.05:
            del f["ratio"]
        signal = f["score"] or 0.0
        rule = signal + (f["age"] - 50) / 30 + (0.5 if f["channel"] == "app" else 0.0) > 0
        served = rule
        if change is not None and i >= change:
            rule = not rule
        label = rule if rng.random() >= 0.1 else not rule
        text = json.dumps(f).replace("\\", "\\\\")       # as COPY text prints it
        lines.append(f"{i + 1}\t{text}\t{'yes' if label else 'no'}\t"
                     f"{'yes' if served else 'no'}\n".encode())
    return lines


def measure(n: int, estimator: str, scenario: str) -> dict:
    from worker import drift
    from worker.retrain import parse_copied_rows
    from worker.training import challenge

    data = parse_copied_rows(rows(n, scenario))
    data.feature_frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    decision = challenge(data, estimator=estimator, min_training_rows=50)
    fitted = time.perf_counter()
    window = decision.baseline_rows(data)
    drift.baseline(window, decision.feature_kinds)
    done = time.perf_counter()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = decision.trained

    tracemalloc.start()
    challenge(data, estimator=estimator, min_training_rows=50)
    drift.baseline(decision.baseline_rows(data), decision.feature_kinds)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"rows": n, "challenge_s": fitted - started, "baseline_s": done - fitted,
            "peak_rss_mb": after / 1024, "rss_growth_mb": (after - before) / 1024,
            "traced_peak_mb": traced / 2**20, "estimator": t.estimator,
            "data_window": t.split.n - t.split.start, "window": t.window,
            "fits": len(t.windows_tried) + 2, "registered_rows": decision.rows_used}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--estimator", default="auto")
    parser.add_argument("--scenario", default="stationary", choices=["stationary", "change"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.estimator, args.scenario)))
        return 0
    print(f"estimator={args.estimator} scenario={args.scenario} threads=1")
    print(f"{'rows':>8} {'challenge s':>11} {'baseline s':>10} {'peak RSS MB':>11} "
          f"{'RSS growth':>10} {'traced MB':>9}  chose")
    for n in [int(s) for s in args.sizes.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--estimator",
                              args.estimator, "--scenario", args.scenario],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['rows']:>8} {r['challenge_s']:>11.2f} {r['baseline_s']:>10.2f} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_growth_mb']:>10.0f} {r['traced_peak_mb']:>9.0f}"
              f"  {r['estimator']} on {r['window']} of a {r['data_window']}-row data window, "
              f"{r['fits']} fits, registered {r['registered_rows']} rows", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
