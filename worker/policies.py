"""``worker policy show/set``: a model's policy row, read and changed."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .errors import UserError, unknown_model
from .queries import query
from .status import table


def policy_columns(conn) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'retrain_policies'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
    ).fetchall()
    return [r[0] for r in rows]


def show_policy(conn, model: str) -> str:
    with conn.cursor(row_factory=dict_row) as cur:
        own = cur.execute("SELECT 1 FROM retrain_policies WHERE model_name = %s",
                          (model,)).fetchone()
        if own is None and model != "default" and not conn.execute(
                query("model_known"), {"model_name": model}).fetchone()[0]:
            raise unknown_model(model)
        policy = cur.execute(query("policy_for"), {"model_name": model}).fetchone()
    source = "own policy" if own else "uses the default policy"
    rows = [[k, v] for k, v in policy.items() if k != "model_name"]
    return f"policy of {model} ({source})\n" + table(["setting", "value"], rows)


def parse_settings(settings: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"bad setting {item!r}: expected name=value, e.g. min_accuracy=0.85")
        values[key.strip()] = value.strip()
    return values


def set_policy(conn, model: str, values: dict[str, str]) -> None:
    columns = set(policy_columns(conn)) - {"model_name", "updated_at"}
    unknown = sorted(set(values) - columns)
    if unknown:
        raise UserError(f"unknown policy setting {unknown[0]!r}; known: {', '.join(sorted(columns))}")
    # Setting a policy for a model that has no data yet is how a model is
    # configured in advance, so unknown names are accepted here.
    # 'null' clears a nullable setting (schedule_interval=null turns schedules off).
    params = [None if v.lower() in ("null", "none", "") else v for v in values.values()]
    names = list(values)
    # A new row starts as a copy of the default row, then takes the values.
    copy_default = sql.SQL(
        "INSERT INTO retrain_policies SELECT (jsonb_populate_record(p, "
        "jsonb_build_object('model_name', %s::text))).* FROM retrain_policies p "
        "WHERE p.model_name = 'default' ON CONFLICT (model_name) DO NOTHING"
    )
    update = sql.SQL("UPDATE retrain_policies SET {} WHERE model_name = %s").format(
        sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(n)) for n in names
        )
    )
    try:
        with conn.transaction():
            conn.execute(copy_default, (model,))
            conn.execute(update, [*params, model])
    except psycopg.errors.CheckViolation as exc:
        raise UserError(f"bad policy value: {exc.diag.message_primary}") from None
    except (psycopg.errors.InvalidTextRepresentation, psycopg.errors.InvalidDatetimeFormat,
            psycopg.errors.NumericValueOutOfRange, psycopg.errors.DatatypeMismatch) as exc:
        raise UserError(f"bad policy value: {exc.diag.message_primary}") from None
