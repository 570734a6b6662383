"""``worker status``: the model_status view and recent events, as tables."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import dict_row

from .queries import query


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def render_status(conn, model: str | None, limit: int) -> str:
    with conn.cursor(row_factory=dict_row) as cur:
        models = cur.execute(query("model_status")).fetchall()
        events = cur.execute(query("recent_events"), {"model_name": model, "limit": limit}).fetchall()
    if model is not None:
        models = [m for m in models if m["model_name"] == model]
    model_rows = [[m["model_name"], m["champion_version"], m["champion_accuracy"],
                   m["latest_accuracy"], m["latest_drift_score"], m["last_retrain_status"],
                   m["last_retrain_at"], m["pending_reasons"] or (
                       "running" if m["running_event_id"] else None)]
                  for m in models]
    event_rows = [[e["id"], e["model_name"], e["reasons"], e["status"], e["attempts"],
                   e["created_at"], e["accuracy"], e["champion_accuracy"], e["promoted"],
                   e["model_version"], (e["error"] or "")[:60] or None]
                  for e in events]
    return "\n".join([
        "Models",
        table(["model", "champion", "champion_acc", "latest_acc", "latest_drift",
               "last_retrain", "last_retrain_at", "pending"], model_rows),
        "",
        "Recent events",
        table(["id", "model", "reasons", "status", "tries", "created", "accuracy",
               "champion_acc", "promoted", "version", "error"], event_rows),
    ])
