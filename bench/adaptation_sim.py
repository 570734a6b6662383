"""Offline simulation of pg-retrain's adaptation: streams arrive in batches,
the champion predicts each batch before its labels arrive, triggers (or a
fixed strategy) decide when to retrain, and a retrain runs the worker's own
training code (worker.training.challenge) on the newest labelled rows.

    pip install -e '.[bench]'          # river
    python bench/adaptation_sim.py                      # every stream, every strategy
    python bench/adaptation_sim.py --streams sea --strategies triggers,every
    python bench/adaptation_sim.py --algorithm old      # the algorithm before issue 12

No database and no MLflow: the triggers are modelled in Python after
SPEC section 2 and sql/schema.sql, with the default policy and cooldown 0:
- error_rate: the error of served predictions over the newest 200 labelled
  rows since the last successful retrain (at least 50 of them) is above
  max(0.1, champion holdout error + 0.05), checked once per batch (the
  batch's labels arrive in one statement);
- the drift monitor, refreshed once per batch after the labels: PSI of the
  newest <= 1000 rows since the baseline against the baseline (decile bins,
  frequent categories, floor 0.0001), once 200 rows arrived since it; its
  accuracy is the share of those rows whose prediction equals the label.
  That row fires drift_and_accuracy (PSI > 0.25 and accuracy < 0.9),
  performance (accuracy < 0.8) and accuracy_drop (more than 0.05 below the
  previous monitor row or below the champion's holdout accuracy);
- a model that never trained retrains as soon as it has rows (schedule).
Not modelled: the futile-retrain backoff (it defers by time; here every
fired event runs before the next batch), schedule events, external metrics.

Per stream and strategy it prints: prequential accuracy (mean batch accuracy
over batches 2..N, batch 1 having no model), retrains, promotions, and per
abrupt change the batches until the batch accuracy is back within 0.02 of
the mean of the 5 batches before the change (0 = it never left).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker import drift  # noqa: E402
from worker.features import CATEGORICAL, category_text, is_json_number, as_float  # noqa: E402

BATCH = 500
BATCHES = 100
CHANGE_EVERY = 25

# Default policy (sql/schema.sql), cooldown 0.
ERROR_WINDOW = 200
MIN_ERROR_ROWS = 50
ERROR_THRESHOLD = 0.1
ERROR_MARGIN = 0.05
DRIFT_WINDOW = 1000
DRIFT_MIN_ROWS = 200
DRIFT_THRESHOLD = 0.25
COMBINED_MAX_ACCURACY = 0.9
MIN_ACCURACY = 0.8
DROP_TOLERANCE = 0.05
MAX_TRAINING_ROWS = 50000
PSI_FLOOR = 0.0001


# --------------------------------------------------------------------------
# Streams: (features, labels, change batches)

def _take(gen, n):
    return list(itertools.islice(gen, n))


def stream_sea(seed: int, noise: float = 0.1, variants=(0, 1, 2, 3)):
    """SEA, four concepts (thresholds 8, 9, 7, 9.5), 10% label noise."""
    from river.datasets import synth

    per = BATCHES * BATCH // len(variants)
    rows, labels = [], []
    for i, variant in enumerate(variants):
        for x, y in _take(synth.SEA(variant=variant, noise=noise, seed=seed * 100 + i), per):
            rows.append({f"x{k}": round(v, 5) for k, v in x.items()})
            labels.append(str(y).lower())
    changes = [i * (BATCHES // len(variants)) for i in range(1, len(variants))]
    return rows, labels, changes


def stream_stationary(seed: int):
    """SEA with one concept and 12% label noise."""
    rows, labels, _ = stream_sea(seed, noise=0.12, variants=(0,))
    return rows, labels, []


AGRAWAL_FUNCTIONS = (1, 2, 5, 6)


def stream_agrawal(seed: int):
    """Agrawal, four classification functions (abrupt changes), 5% feature
    perturbation; elevel, car and zipcode as strings (categorical)."""
    from river.datasets import synth

    per = BATCHES * BATCH // len(AGRAWAL_FUNCTIONS)
    rows, labels = [], []
    for i, function in enumerate(AGRAWAL_FUNCTIONS):
        gen = synth.Agrawal(classification_function=function, seed=seed * 100 + i,
                            perturbation=0.05)
        for x, y in _take(gen, per):
            x = dict(x)
            x["elevel"] = f"e{x['elevel']}"
            x["car"] = f"car{x['car']}"
            x["zipcode"] = f"z{x['zipcode']}"
            for k in ("salary", "commission", "hvalue", "loan"):
                x[k] = round(x[k], 2)
            rows.append(x)
            labels.append(f"g{y}")
    changes = [i * (BATCHES // len(AGRAWAL_FUNCTIONS)) for i in range(1, len(AGRAWAL_FUNCTIONS))]
    return rows, labels, changes


SHIFT_CENTRES = ((0.0, 0.0), (3.5, 0.5), (3.0, 3.5), (-0.5, 3.0))
SHIFT_CHANNELS = (("web", "app", "shop"), (0.6, 0.3, 0.1), (0.2, 0.5, 0.3), (0.1, 0.2, 0.7),
                  (0.4, 0.1, 0.5))


def stream_input_shift(seed: int, noise: float = 0.1):
    """The concept holds (y = sin(1.3 x0) + 0.5 sin(1.7 x1) + 0.2 x2 > 0, 10%
    label noise) while the inputs move: every 25 batches the centre of
    (x0, x1) jumps and an irrelevant category's shares change."""
    rng = np.random.default_rng(seed)
    per = BATCHES * BATCH // len(SHIFT_CENTRES)
    names, *shares = SHIFT_CHANNELS
    rows, labels = [], []
    for i, (c0, c1) in enumerate(SHIFT_CENTRES):
        x0 = rng.normal(c0, 1.0, per)
        x1 = rng.normal(c1, 1.0, per)
        x2 = rng.uniform(-1, 1, per)
        channel = rng.choice(names, size=per, p=shares[i])
        y = np.sin(1.3 * x0) + 0.5 * np.sin(1.7 * x1) + 0.2 * x2 > 0
        flip = rng.random(per) < noise
        y = y ^ flip
        for j in range(per):
            rows.append({"x0": round(float(x0[j]), 4), "x1": round(float(x1[j]), 4),
                         "x2": round(float(x2[j]), 4), "channel": str(channel[j])})
            labels.append("pos" if y[j] else "neg")
    changes = [i * (BATCHES // len(SHIFT_CENTRES)) for i in range(1, len(SHIFT_CENTRES))]
    return rows, labels, changes


STREAMS = {
    "sea": stream_sea,
    "input_shift": stream_input_shift,
    "agrawal": stream_agrawal,
    "stationary": stream_stationary,
}


# --------------------------------------------------------------------------
# The drift monitor, as sql/schema.sql bins rows

def _bin(fb: drift.FeatureBaseline, value) -> int:
    if fb.kind == CATEGORICAL:
        if value is None:
            return drift.MISSING
        text = category_text(value)
        return fb.categories.index(text) + 1 if text in fb.categories else drift.OTHER
    if not is_json_number(value):
        return drift.MISSING
    return int(np.searchsorted(fb.edges, as_float(value), side="right"))


def psi(baseline: list[drift.FeatureBaseline], rows: list[dict]) -> float:
    worst = 0.0
    for fb in baseline:
        counts: dict[int, int] = {}
        for row in rows:
            b = _bin(fb, row.get(fb.feature))
            counts[b] = counts.get(b, 0) + 1
        total = len(rows)
        value = 0.0
        for entry in fb.bins:
            p = max(entry["share"], PSI_FLOOR)
            r = max(counts.get(entry["bin"], 0) / total, PSI_FLOOR)
            value += (r - p) * math.log(r / p)
        worst = max(worst, value)
    return worst


# --------------------------------------------------------------------------
# Algorithms: data in, decision out

@dataclass
class Outcome:
    promoted: bool
    accuracy: float
    pipeline: object          # what would be served if promoted
    baseline: list
    rows_used: int
    window: int
    holdout_rows: int
    seconds: float
    note: str = ""
    cut: bool = False             # the data window was cut at a detected change


def algorithm_new(estimator: str, hide_predictions: bool = False):
    from worker import training

    def run(features, labels, predictions, row_ids, champion):
        started = time.perf_counter()
        data = training.TrainingData(features, labels, row_ids,
                                     None if hide_predictions else predictions)
        decision = training.challenge(data, champion, estimator=estimator)
        baseline = drift.baseline(decision.baseline_rows(data), decision.feature_kinds)
        t = decision.trained
        note = (f"{t.estimator[:3]} D={t.split.n - t.split.start} w={t.window} "
                f"h={t.holdout_rows} err_chg={t.split.error_change} inp_chg={t.split.input_change} "
                f"acc={t.accuracy:.3f} champ={decision.champion_accuracy} tried={t.windows_tried}")
        return Outcome(decision.promoted, decision.accuracy, decision.pipeline, baseline,
                       decision.rows_used, decision.window, decision.holdout_rows,
                       time.perf_counter() - started, note,
                       t.split.error_change is not None or t.split.input_change is not None)
    return run


def algorithm_old(estimator: str, hide_predictions: bool = False):
    """worker/training.py and retrain.py as of commit 5a0e268 (before issue 12)."""
    source = subprocess.run(["git", "show", "5a0e268:worker/training.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    source = source.replace("from .features import", "from worker.features import")
    path = Path(tempfile.mkdtemp()) / "old_training.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_training", path)
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_training"] = old
    spec.loader.exec_module(old)

    def run(features, labels, predictions, row_ids, champion):
        started = time.perf_counter()
        trained = old.train(old.TrainingData(features, labels, row_ids), estimator=estimator)
        champion_accuracy = None
        if champion is not None:
            champion_accuracy = old.score(champion, trained.holdout_features,
                                          trained.holdout_labels)
        promoted = champion_accuracy is None or trained.accuracy >= champion_accuracy
        used = features[len(features) - (trained.training_rows + trained.holdout_rows):]
        return Outcome(promoted, trained.accuracy, trained.pipeline,
                       drift.baseline(used, trained.feature_kinds),
                       trained.training_rows, trained.window, trained.holdout_rows,
                       time.perf_counter() - started)
    return run


ALGORITHMS = {"new": algorithm_new, "old": algorithm_old}


# --------------------------------------------------------------------------
# One run of one strategy over one stream

@dataclass
class Run:
    batch_accuracy: list[float] = field(default_factory=list)
    retrains: int = 0
    promotions: int = 0
    reasons: dict = field(default_factory=dict)
    retrain_batches: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cuts: int = 0


def simulate(stream, strategy: str, algorithm, growth: float = 0.0,
             served_anchor: int = 0) -> Run:
    features, labels, _ = stream
    n_batches = len(labels) // BATCH
    run = Run()
    predictions: list[str | None] = []
    champion = None
    champion_accuracy = None
    champion_rows = 0
    promoted_row = 0
    last_retrain_row = 0          # error window: rows since the last successful retrain
    baseline = None
    baseline_row = 0              # monitor: rows since the baseline
    previous_monitor_accuracy = None
    every = int(strategy[5:]) if strategy.startswith("every") and strategy != "every" else 1

    for b in range(n_batches):
        lo, hi = b * BATCH, (b + 1) * BATCH
        batch = features[lo:hi]
        if champion is not None:
            served = [str(p) for p in champion.predict(pd.DataFrame.from_records(batch))]
            run.batch_accuracy.append(float(np.mean(np.array(served) == np.array(labels[lo:hi]))))
        else:
            served = [None] * len(batch)
            run.batch_accuracy.append(float("nan"))
        predictions.extend(served)

        # Labels arrive: which conditions fire?
        reasons = []
        if champion is None:
            reasons.append("schedule")
        elif strategy == "triggers":
            window = [i for i in range(max(last_retrain_row, hi - ERROR_WINDOW), hi)
                      if predictions[i] is not None]
            if len(window) >= MIN_ERROR_ROWS:
                error = np.mean([predictions[i] != labels[i] for i in window])
                threshold = ERROR_THRESHOLD
                anchor = None if champion_accuracy is None else 1 - champion_accuracy
                if served_anchor and hi - promoted_row >= served_anchor:
                    # Proposed: the champion's error as served, over its first
                    # rows after promotion, instead of its holdout error.
                    first = range(promoted_row, promoted_row + served_anchor)
                    anchor = float(np.mean([predictions[i] != labels[i] for i in first]))
                if anchor is not None:
                    threshold = max(threshold, anchor + ERROR_MARGIN)
                if error > threshold:
                    reasons.append("error_rate")
            if baseline is not None and hi - baseline_row >= DRIFT_MIN_ROWS:
                start = max(baseline_row, hi - DRIFT_WINDOW)
                recent = features[start:hi]
                score = psi(baseline, recent)
                pairs = [(predictions[i], labels[i]) for i in range(start, hi)
                         if predictions[i] is not None]
                accuracy = float(np.mean([p == y for p, y in pairs])) if pairs else None
                if accuracy is not None:
                    if score > DRIFT_THRESHOLD and accuracy < COMBINED_MAX_ACCURACY:
                        reasons.append("drift_and_accuracy")
                    if accuracy < MIN_ACCURACY:
                        reasons.append("performance")
                    if ((previous_monitor_accuracy is not None
                         and previous_monitor_accuracy - accuracy > DROP_TOLERANCE)
                            or (champion_accuracy is not None
                                and champion_accuracy - accuracy > DROP_TOLERANCE)):
                        reasons.append("accuracy_drop")
                    previous_monitor_accuracy = accuracy
            if growth and hi - last_retrain_row >= (growth - 1) * champion_rows:
                reasons.append("growth")
        elif strategy == "never":
            pass
        elif strategy.startswith("every"):
            if b % every == 0:
                reasons.append(strategy)
        if not reasons:
            continue

        start = max(0, hi - MAX_TRAINING_ROWS)
        outcome = algorithm(features[start:hi], labels[start:hi], predictions[start:hi],
                            list(range(start + 1, hi + 1)), champion)
        run.retrains += 1
        run.seconds += outcome.seconds
        run.cuts += outcome.cut
        run.retrain_batches.append(b)
        run.windows.append(outcome.window)
        run.notes.append(f"b{b} {','.join(reasons)} -> {'P' if outcome.promoted else 'kept'} "
                         f"{outcome.note}")
        for r in reasons[:1]:
            run.reasons[r] = run.reasons.get(r, 0) + 1
        last_retrain_row = hi
        baseline, baseline_row = outcome.baseline, hi
        if outcome.promoted:
            run.promotions += 1
            champion = outcome.pipeline
            champion_accuracy = outcome.accuracy
            champion_rows = outcome.rows_used
            promoted_row = hi
    return run


def recovery(accuracy: list[float], changes: list[int]) -> list[int | None]:
    out = []
    for c in changes:
        before = [a for a in accuracy[max(1, c - 5):c] if not math.isnan(a)]
        level = float(np.mean(before)) - 0.02
        k = next((k for k in range(0, len(accuracy) - c) if accuracy[c + k] >= level), None)
        out.append(k)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--strategies", default="never,every,every5,every10,triggers")
    parser.add_argument("--algorithm", default="new", choices=sorted(ALGORITHMS))
    parser.add_argument("--estimator", default="auto")
    parser.add_argument("--seeds", default="1", help="comma-separated stream seeds")
    parser.add_argument("--growth", type=float, default=0.0,
                        help="a proposed extra trigger (not in SPEC): retrain once the rows since "
                             "the last retrain reach (GROWTH - 1) x the champion's rows")
    parser.add_argument("--served-anchor", type=int, default=0, metavar="ROWS",
                        help="a proposed change (not in SPEC): the error_rate threshold is "
                             "anchored on the champion's served error over its first ROWS rows "
                             "once they are labelled, instead of its holdout error")
    parser.add_argument("--hide-predictions", action="store_true",
                        help="training sees no served predictions (the triggers still do)")
    parser.add_argument("--verbose", action="store_true", help="batch accuracies and retrains")
    args = parser.parse_args(argv)
    algorithm = ALGORITHMS[args.algorithm](args.estimator, args.hide_predictions)

    print(f"algorithm={args.algorithm} estimator={args.estimator} seeds={args.seeds} "
          f"batches={BATCHES}x{BATCH}" + (f" growth={args.growth}" if args.growth else "")
          + (f" served-anchor={args.served_anchor}" if args.served_anchor else "")
          + (" training without predictions" if args.hide_predictions else ""))
    header = (f"{'stream':<12} {'strategy':<9} {'seed':>4} {'preq acc':>8} {'retrains':>8} "
              f"{'promoted':>8} {'cuts':>5} {'recovery (batches)':<18} {'fit s':>6}  reasons")
    print(header)
    print("-" * len(header))
    for stream_name in args.streams.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            stream = STREAMS[stream_name](seed)
            for strategy in args.strategies.split(","):
                run = simulate(stream, strategy, algorithm, args.growth, args.served_anchor)
                preq = float(np.nanmean(run.batch_accuracy[1:]))
                rec = recovery(run.batch_accuracy, stream[2])
                rec_text = ",".join("-" if k is None else str(k) for k in rec) or "n/a"
                reasons = " ".join(f"{k}={v}" for k, v in sorted(run.reasons.items()))
                print(f"{stream_name:<12} {strategy:<9} {seed:>4} {preq:>8.4f} {run.retrains:>8} "
                      f"{run.promotions:>8} {run.cuts:>5} {rec_text:<18} {run.seconds:>6.1f}  {reasons}",
                      flush=True)
                if args.verbose:
                    print("   acc:", " ".join(f"{a:.2f}" for a in run.batch_accuracy))
                    print("   retrains at:", run.retrain_batches)
                    for note in run.notes:
                        print("   ", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
