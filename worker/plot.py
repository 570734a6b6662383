"""``worker plot MODEL``: a PNG of a model's history.

Top: accuracy over time, one line per ``model_metrics`` source (a user's
evaluation job, pg-retrain's monitor, a retrain's holdout score). Bottom: the
drift score, likewise. Both: a vertical line where each retrain finished,
labelled with its reasons - solid green when it promoted a new champion,
dashed grey when the challenger was not better, dotted red when it failed.

It reads only the contract's columns (SPEC section 1), so it keeps working
whatever the internal tables become. The figure is drawn on a bare
matplotlib ``Figure`` (the Agg canvas): no pyplot state, no display needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psycopg.rows import dict_row

from .errors import UserError
from .tracking import safe_directory_name

SOURCES = {"external": "tab:blue", "monitor": "tab:orange", "retrain": "tab:purple"}
#: How each finished retrain is drawn: (colour, line style, legend label).
OUTCOMES = {
    "promoted": ("tab:green", "-", "retrain: promoted"),
    "kept": ("tab:gray", "--", "retrain: champion kept"),
    "failed": ("tab:red", ":", "retrain: failed"),
}
#: Beyond this many retrains their reasons are not written (they would overlap).
MAX_LABELS = 30

METRICS_SQL = """
SELECT recorded_at, source, accuracy, drift_score, model_version
FROM model_metrics
WHERE model_name = %(model_name)s
ORDER BY recorded_at, id
"""

RETRAINS_SQL = """
SELECT id, reason, reasons, status, created_at, finished_at, accuracy,
       champion_accuracy, promoted, model_version, error
FROM retrain_events
WHERE model_name = %(model_name)s AND status IN ('succeeded', 'failed')
  AND finished_at IS NOT NULL
ORDER BY finished_at, id
"""


@dataclass
class History:
    model: str
    metrics: list[dict]
    retrains: list[dict]


def gather_history(conn, model: str) -> History:
    """The model's metrics rows (oldest first) and finished retrains."""
    with conn.cursor(row_factory=dict_row) as cur:
        metrics = cur.execute(METRICS_SQL, {"model_name": model}).fetchall()
        retrains = cur.execute(RETRAINS_SQL, {"model_name": model}).fetchall()
    return History(model, metrics, retrains)


def default_file_name(model: str) -> str:
    """``<model>-history.png``, with the model name made safe as one file name
    (any text is a model name: 'a/b', '..')."""
    return f"{safe_directory_name(model)}-history.png"


def outcome(event: dict) -> str:
    if event["status"] == "failed":
        return "failed"
    return "promoted" if event["promoted"] else "kept"


def render(history: History, path: Path) -> None:
    """Draw ``history`` into the PNG file ``path``."""
    try:
        draw(history).savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def draw(history: History):
    """The history as a matplotlib Figure."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(11, 7), layout="constrained")
    accuracy_ax, drift_ax = fig.subplots(2, 1, sharex=True)
    fig.suptitle(f"{history.model}: accuracy, drift and retrains")

    for ax, column, label in ((accuracy_ax, "accuracy", "accuracy"),
                              (drift_ax, "drift_score", "drift score (PSI)")):
        for source, colour in SOURCES.items():
            points = [(m["recorded_at"], m[column]) for m in history.metrics
                      if m["source"] == source and m[column] is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1, color=colour,
                        label=source)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    accuracy_ax.set_ylim(0, 1.05)
    drift_ax.set_ylim(bottom=0)

    for event in history.retrains:
        colour, style, _ = OUTCOMES[outcome(event)]
        for ax in (accuracy_ax, drift_ax):
            ax.axvline(event["finished_at"], color=colour, linestyle=style, linewidth=1.2)
        if len(history.retrains) <= MAX_LABELS:
            accuracy_ax.annotate(
                ",".join(event["reasons"] or [event["reason"]]),
                xy=(event["finished_at"], 1.0), xycoords=("data", "axes fraction"),
                xytext=(2, -4), textcoords="offset points", rotation=90,
                va="top", ha="left", fontsize=7, color=colour)

    if not history.metrics:
        message = f"no metrics recorded yet for model {history.model}"
        for ax in (accuracy_ax, drift_ax):
            ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center",
                    color="gray")
    if history.metrics or history.retrains:
        locator = mdates.AutoDateLocator()
        drift_ax.xaxis.set_major_locator(locator)
        drift_ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        drift_ax.set_xlabel("time (UTC)")
    else:
        drift_ax.set_xticks([])  # no time axis without a single timestamp

    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=s)
               for s, c in SOURCES.items()
               if any(m["source"] == s for m in history.metrics)]
    handles += [Line2D([], [], color=c, linestyle=ls, label=label)
                for kind, (c, ls, label) in OUTCOMES.items()
                if any(outcome(e) == kind for e in history.retrains)]
    if handles:
        accuracy_ax.legend(handles=handles, loc="lower left", fontsize=8)
    return fig
