"""``worker status``: the model_status view and recent events, as tables.

A pending event shows when it is due: ``now``, or how long it waits and
why (``in 42m (cooldown)``; a wait of a day or more as the time). A model
that needs attention (its automatic retrains keep ending without promotion)
gets a line under the models that says so and why.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg.rows import dict_row

from .queries import query

#: Pending events: when each is due, and what makes it wait. The cooldown
#: ends a policy's cooldown after the model's last finished retrain (as
#: retrain_due_at computes it); a later run_after comes from the futile
#: retrain backoff, or from a retry after an error.
PENDING_SQL = """
SELECT e.id, e.model_name, e.run_after, now() AS now, e.error,
       (SELECT max(f.finished_at) FROM retrain_events AS f
        WHERE f.model_name = e.model_name AND f.status IN ('succeeded', 'failed'))
           + p.cooldown AS cooldown_until,
       (SELECT r.id FROM retrain_events AS r
        WHERE r.model_name = e.model_name AND r.status = 'running') AS running_id
FROM retrain_events AS e
CROSS JOIN LATERAL retrain_policy_for(e.model_name) AS p
WHERE e.status = 'pending'
"""


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


def duration(delta: timedelta) -> str:
    """A wait, short: 45s, 42m, 3h 5m, 2d 4h."""
    seconds = max(0, int(delta.total_seconds() + 0.5))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def due_text(pending: dict, attention: bool) -> str:
    """When a pending event runs: 'now', 'in 42m (cooldown)', a time a day
    or more away, or 'after event 12' while the model's retrain runs."""
    if pending["run_after"] <= pending["now"]:
        if pending["running_id"] is not None:
            return f"after event {pending['running_id']}"
        return "now"
    if pending["error"]:
        why = "retry"
    elif (pending["cooldown_until"] is not None
          and pending["run_after"] <= pending["cooldown_until"] + timedelta(seconds=1)):
        why = "cooldown"
    elif attention:
        why = "backoff"
    else:
        why = None
    wait = pending["run_after"] - pending["now"]
    when = (f"in {duration(wait)}" if wait < timedelta(days=1)
            else pending["run_after"].strftime("%Y-%m-%d %H:%M %Z").strip())
    return f"{when} ({why})" if why else when


def render_status(conn, model: str | None, limit: int) -> str:
    with conn.cursor(row_factory=dict_row) as cur:
        models = cur.execute(query("model_status")).fetchall()
        events = cur.execute(query("recent_events"), {"model_name": model, "limit": limit}).fetchall()
        pending = {p["id"]: p for p in cur.execute(PENDING_SQL).fetchall()}
    if model is not None:
        models = [m for m in models if m["model_name"] == model]
    attention = {m["model_name"]: m.get("needs_attention") for m in models
                 if m.get("needs_attention")}
    due = {p["id"]: due_text(p, p["model_name"] in attention) for p in pending.values()}

    model_rows = [[m["model_name"], m["champion_version"], m["champion_accuracy"],
                   m["latest_accuracy"], m["latest_drift_score"], m["last_retrain_status"],
                   m["last_retrain_at"],
                   m["pending_reasons"] or ("running" if m["running_event_id"] else None),
                   due.get(m.get("pending_event_id"))]
                  for m in models]
    event_rows = [[e["id"], e["model_name"], e["reasons"], e["status"],
                   due.get(e["id"]) if e["status"] == "pending" else None, e["attempts"],
                   e["created_at"], e["accuracy"], e["champion_accuracy"], e["promoted"],
                   e["model_version"], (e["error"] or "")[:60] or None]
                  for e in events]
    out = [
        "Models",
        table(["model", "champion", "champion_acc", "latest_acc", "latest_drift",
               "last_retrain", "last_retrain_at", "pending", "due"], model_rows),
    ]
    for m in models:
        if m["model_name"] in attention:
            out.append(f"! {m['model_name']} needs attention: {attention[m['model_name']]} "
                       f"(or run: worker trigger {m['model_name']})")
    out += [
        "",
        "Recent events",
        table(["id", "model", "reasons", "status", "due", "tries", "created", "accuracy",
               "champion_acc", "promoted", "version", "error"], event_rows),
    ]
    return "\n".join(out)
