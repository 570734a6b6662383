"""Fuzzed input against the real database (issue 14, part 5).

1. Hostile rows for training_data, model_metrics and retrain_policies are
   rejected by the database with an error that names their rule (the CHECK
   constraint, the NOT NULL column, or the input problem), never by a crash
   inside our PL/pgSQL; a bad row in a multi-row INSERT or a COPY rejects the
   whole statement: nothing written, no event, no notification.
2. Hostile rows that are valid are stored as sent.
3. Random sequences of good statements on two models, under random small
   policies, record exactly the events that SPEC.md section 2 and the
   schema's documented rules call for: after each statement the events, their
   reasons, details and run_after, and the notifications are compared with an
   independent Python model of the rules (``Rules`` below).

Every test uses one database (the ``conn`` fixture) and resets its tables
between examples. Hypothesis runs derandomized: CI sees the same examples.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st
from psycopg import sql

from tests.fuzz_strategies import (
    RawNumber,
    bad_features,
    flat_features,
    fuzz,
    hostile_text,
    to_json_text,
)
from tests.helpers import set_policy

CHANNEL = "retrain_events"
INT_MAX = 2**31 - 1


class KnownBug(AssertionError):
    """The symptom of a reported SQL bug: tests marked
    ``xfail(strict=True, raises=KnownBug)`` still fail on any other error."""


# -----------------------------------------------------------------------------
# The database: one per test function, tables reset between examples

@dataclass
class Db:
    conn: psycopg.Connection
    notes: list = field(default_factory=list)

    def execute(self, query, params=None):
        return self.conn.execute(query, params)

    def scalar(self, query, params=None):
        return self.conn.execute(query, params).fetchone()[0]

    def reset(self) -> None:
        """Empty tables, the default policy back to its defaults, ids from 1.
        (DELETE: TRUNCATE costs ~100 ms a time, this ~2 ms.)"""
        self.execute(
            "DELETE FROM training_data; DELETE FROM model_metrics; DELETE FROM retrain_events; "
            "DELETE FROM retrain_schedule_periods; DELETE FROM drift_baselines; "
            "SELECT setval(pg_get_serial_sequence(t, 'id'), 1, false) "
            "FROM unnest(ARRAY['training_data', 'model_metrics', 'retrain_events']) AS t")
        self.execute("DELETE FROM retrain_policies WHERE model_name <> 'default'")
        self.execute(sql.SQL("UPDATE retrain_policies SET {} WHERE model_name = 'default'").format(
            sql.SQL(", ").join(sql.SQL("{} = DEFAULT").format(sql.Identifier(c))
                               for c in POLICY_COLUMNS)))
        self.take_notifications()

    def take_notifications(self) -> list[dict]:
        """Payloads of the notifications received so far (a round trip first,
        so that whatever the server sent has been read)."""
        self.execute("SELECT 1")
        out = [json.loads(n.payload) for n in self.notes]
        self.notes.clear()
        return out

    def counts(self) -> dict:
        return dict(zip(
            ("training_data", "model_metrics", "retrain_events", "retrain_policies"),
            self.execute(
                "SELECT (SELECT count(*) FROM training_data), (SELECT count(*) FROM model_metrics), "
                "(SELECT count(*) FROM retrain_events), (SELECT count(*) FROM retrain_policies)"
            ).fetchone()))


@pytest.fixture
def db(conn):
    conn.execute("SET TimeZone = 'UTC'")
    # Thousands of one-statement transactions: no waiting for the WAL flush.
    conn.execute("SET synchronous_commit = off")
    d = Db(conn)
    conn.add_notify_handler(lambda n: d.notes.append(n) if n.channel == CHANNEL else None)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
    return d


POLICY_COLUMNS = [
    "enabled", "error_rate_threshold", "min_accuracy", "accuracy_drop_tolerance",
    "drift_threshold", "combined_max_accuracy", "drift_alone", "schedule_interval", "cooldown",
    "min_training_rows", "max_attempts", "error_window", "min_error_rows", "error_rate_margin",
    "drift_min_rows", "drift_window", "futile_retrains", "futile_backoff", "estimator",
    "training_window", "max_training_rows", "holdout_fraction",
]


# -----------------------------------------------------------------------------
# Rules: what an error must name

@dataclass(frozen=True)
class Rule:
    """What a rejection must say: a CHECK constraint, a NOT NULL column, an
    input error (SQLSTATE and a fragment of its message or detail), or
    psycopg's own refusal of a NUL character (it never reaches the server)."""

    kind: str              # constraint | not_null | input | client_nul
    name: str = ""         # constraint or column name
    sqlstate: str = ""
    fragment: str = ""

    def __str__(self):
        return f"{self.kind}:{self.name or self.sqlstate}"


def constraint(name):
    return Rule("constraint", name, "23514")


def not_null(column):
    return Rule("not_null", column, "23502")


def input_error(sqlstate, fragment):
    return Rule("input", sqlstate=sqlstate, fragment=fragment)


CLIENT_NUL = Rule("client_nul", fragment="NUL (0x00)")
FLOAT_OUT_OF_RANGE = input_error("22003", "out of range for type double precision")
INTEGER_OUT_OF_RANGE = input_error("22003", "integer out of range")
JSON_NUL = input_error("22P05", "\\u0000 cannot be converted to text")
FLAT = constraint("features_must_be_flat_json_object")


def rule_matches(exc: Exception, rule: Rule) -> bool:
    if rule.kind == "client_nul":
        return (isinstance(exc, psycopg.DataError) and exc.sqlstate is None
                and rule.fragment in str(exc))
    if not isinstance(exc, psycopg.Error) or exc.sqlstate != rule.sqlstate:
        return False
    if rule.kind == "constraint":
        return exc.diag.constraint_name == rule.name and rule.name in str(exc)
    if rule.kind == "not_null":
        return exc.diag.column_name == rule.name and f'"{rule.name}"' in str(exc)
    text = f"{exc.diag.message_primary} {exc.diag.message_detail or ''}"
    return rule.fragment in text


def assert_names_a_rule(exc: Exception, rules) -> None:
    """The error is one of ``rules`` (any of them when several bad values are
    in one statement), and none of our PL/pgSQL functions raised it."""
    rules = list(rules)
    assert any(rule_matches(exc, r) for r in rules), (
        f"{type(exc).__name__} [{getattr(exc, 'sqlstate', None)}]: {exc!s}\n"
        f"does not name any of {[str(r) for r in rules]}")
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    assert "PL/pgSQL" not in context, f"raised from inside a trigger function: {context}"


def assert_nothing_happened(db: Db, before: dict) -> None:
    assert db.counts() == before, "a rejected statement wrote something"
    assert db.take_notifications() == [], "a rejected statement notified"


# -----------------------------------------------------------------------------
# Hostile rows: each a good row with one bad value (and the rule it breaks)

NUL_TEXTS = st.builds(lambda a, b: a + "\x00" + b, hostile_text(), hostile_text())

UNIT_OUTSIDE = st.one_of(
    st.floats(min_value=1, exclude_min=True),                 # up to +inf
    st.floats(max_value=0, exclude_max=True),                 # down to -inf
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e-320, -5e-324,
                     1.0000000000000002, -0.0000001]),
)
NEGATIVE_OR_NOT_FINITE = st.one_of(
    st.floats(max_value=0, exclude_max=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -5e-324]),
)
FLOAT_TEXT_OUT_OF_RANGE = st.sampled_from(["1e400", "-1e400", "1e-400", "-1e-400", "2e308"])


def good_training_row() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "model_name": st.one_of(st.just("m"), hostile_text(min_size=1)),
        "features": flat_features(),
        "label": st.one_of(st.none(), hostile_text()),
        "prediction": st.one_of(st.none(), hostile_text()),
        "error_rate": st.one_of(st.none(), st.floats(0, 1),
                                st.sampled_from([0.0, 1.0, 1e-320, 5e-324, 0.1, -0.0])),
    })


def training_corruptions() -> st.SearchStrategy[tuple[dict, Rule]]:
    """(changes to a good row, the rule they break)."""
    return st.one_of(
        st.just(({"model_name": ""}, constraint("model_name_not_empty"))),
        st.just(({"model_name": None}, not_null("model_name"))),
        NUL_TEXTS.map(lambda t: ({"model_name": t}, CLIENT_NUL)),
        bad_features().map(lambda f: ({"features": f}, FLAT)),
        st.just(({"features": None}, not_null("features"))),
        st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(
            lambda tok: ({"features": {"x": RawNumber(tok)}},
                         input_error("22P02", f'Token "{tok}" is invalid'))),
        st.builds(lambda k, v: {k: v}, NUL_TEXTS, st.just(1)).map(
            lambda f: ({"features": f}, JSON_NUL)),
        st.builds(lambda v: {"x": v}, NUL_TEXTS).map(lambda f: ({"features": f}, JSON_NUL)),
        st.just(({"features": {"x": "\ud800"}}, input_error("22P02", "surrogate"))),
        NUL_TEXTS.map(lambda t: ({"label": t}, CLIENT_NUL)),
        NUL_TEXTS.map(lambda t: ({"prediction": t}, CLIENT_NUL)),
        UNIT_OUTSIDE.map(lambda v: ({"error_rate": v}, constraint("error_rate_between_0_and_1"))),
        FLOAT_TEXT_OUT_OF_RANGE.map(lambda v: ({"error_rate": v}, FLOAT_OUT_OF_RANGE)),
        st.sampled_from(["abc", "", "1,5", "0x1"]).map(
            lambda v: ({"error_rate": v},
                       input_error("22P02", "invalid input syntax for type double precision"))),
    )


def bad_training_row():
    return st.builds(lambda row, c: ({**row, **c[0]}, c[1]),
                     good_training_row(), training_corruptions())


TRAINING_COLUMNS = ("model_name", "features", "label", "prediction", "error_rate")


def training_params(row: dict) -> list:
    features = row["features"]
    return [row["model_name"], None if features is None else to_json_text(features),
            row["label"], row["prediction"], row["error_rate"]]


def insert_training(db: Db, rows: list[dict]) -> None:
    """One INSERT statement of the rows."""
    values = sql.SQL(", ").join(
        sql.SQL("(%s, %s::jsonb, %s, %s, %s::float8)") for _ in rows)
    params = [p for row in rows for p in training_params(row)]
    db.execute(sql.SQL("INSERT INTO training_data (model_name, features, label, prediction, "
                       "error_rate) VALUES ") + values, params)


def copy_training(db: Db, rows: list[dict]) -> None:
    """One COPY statement of the rows (text format, as ETL tools send it)."""
    with db.conn.cursor() as cur:
        with cur.copy("COPY training_data (model_name, features, label, prediction, error_rate) "
                      "FROM STDIN") as copy:
            for row in rows:
                copy.write_row(training_params(row))


def good_metric_row() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "model_name": st.one_of(st.just("m"), hostile_text(min_size=1)),
        "model_version": st.one_of(st.none(), hostile_text()),
        "accuracy": st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0.0, 1.0, 5e-324])),
        "drift_score": st.one_of(st.none(), st.floats(0, allow_infinity=False),
                                 st.sampled_from([0.0, 1e308, 1.7976931348623157e308, 5e-324])),
        "source": st.sampled_from(["external", "monitor", "retrain"]),
    })


def metric_corruptions() -> st.SearchStrategy[tuple[dict, Rule]]:
    return st.one_of(
        st.just(({"model_name": ""}, constraint("model_name_not_empty"))),
        st.just(({"model_name": None}, not_null("model_name"))),
        NUL_TEXTS.map(lambda t: ({"model_name": t}, CLIENT_NUL)),
        NUL_TEXTS.map(lambda t: ({"model_version": t}, CLIENT_NUL)),
        UNIT_OUTSIDE.map(lambda v: ({"accuracy": v}, constraint("accuracy_between_0_and_1"))),
        FLOAT_TEXT_OUT_OF_RANGE.map(lambda v: ({"accuracy": v}, FLOAT_OUT_OF_RANGE)),
        NEGATIVE_OR_NOT_FINITE.map(
            lambda v: ({"drift_score": v}, constraint("drift_score_at_least_0_and_finite"))),
        FLOAT_TEXT_OUT_OF_RANGE.map(lambda v: ({"drift_score": v}, FLOAT_OUT_OF_RANGE)),
        hostile_text().filter(lambda s: s not in ("external", "monitor", "retrain")).map(
            lambda s: ({"source": s}, constraint("source_is_external_monitor_or_retrain"))),
        st.sampled_from(["External", " external", "retrain ", "MONITOR", "cron", "manual"]).map(
            lambda s: ({"source": s}, constraint("source_is_external_monitor_or_retrain"))),
        st.just(({"source": None}, not_null("source"))),
        NUL_TEXTS.map(lambda t: ({"source": t}, CLIENT_NUL)),
    )


def bad_metric_row():
    return st.builds(lambda row, c: ({**row, **c[0]}, c[1]),
                     good_metric_row(), metric_corruptions())


METRIC_COLUMNS = ("model_name", "model_version", "accuracy", "drift_score", "source")


def insert_metrics(db: Db, rows: list[dict]) -> None:
    values = sql.SQL(", ").join(
        sql.SQL("(%s, %s, %s::float8, %s::float8, %s)") for _ in rows)
    params = [row[c] for row in rows for c in METRIC_COLUMNS]
    db.execute(sql.SQL("INSERT INTO model_metrics (model_name, model_version, accuracy, "
                       "drift_score, source) VALUES ") + values, params)


def copy_metrics(db: Db, rows: list[dict]) -> None:
    with db.conn.cursor() as cur:
        with cur.copy("COPY model_metrics (model_name, model_version, accuracy, drift_score, "
                      "source) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in METRIC_COLUMNS])


# retrain_policies: for every CHECK constraint, values that break it.

def _unit_check(name):
    return UNIT_OUTSIDE.map(lambda v: (name, v, constraint(f"{name}_between_0_and_1")))


def _positive(name):
    return st.one_of(
        st.integers(-INT_MAX - 1, 0).map(lambda v: (name, v, constraint(f"{name}_positive"))),
        st.one_of(st.integers(min_value=INT_MAX + 1), st.integers(max_value=-INT_MAX - 2)).map(
            lambda v: (name, v, INTEGER_OUT_OF_RANGE)))


NEGATIVE_INTERVALS = st.one_of(
    st.sampled_from(["-1 microsecond", "-1 day", "1 day -25 hours", "1 mon -31 days",
                     "-10 years", "-178000000 years"]),
    st.integers(1, 10**12).map(lambda us: f"-{us} microseconds"))
OVER_10_YEARS = st.one_of(
    st.sampled_from(["10 years 1 microsecond", "3601 days", "86401 hours", "121 mons",
                     "11 years -1 day", "178000000 years"]),
    st.integers(3600 * 86400 * 10**6 + 1, 2**62).map(lambda us: f"{us} microseconds"))

POLICY_BAD = {
    "model_name_not_empty": st.just(("model_name", "", constraint("model_name_not_empty"))),
    **{f"{c}_between_0_and_1": _unit_check(c) for c in (
        "error_rate_threshold", "min_accuracy", "accuracy_drop_tolerance",
        "combined_max_accuracy", "error_rate_margin")},
    "drift_threshold_at_least_0_and_finite": NEGATIVE_OR_NOT_FINITE.map(
        lambda v: ("drift_threshold", v, constraint("drift_threshold_at_least_0_and_finite"))),
    "holdout_fraction_between_0_05_and_0_5": st.one_of(
        st.floats(max_value=0.05, exclude_max=True), st.floats(min_value=0.5, exclude_min=True),
        st.sampled_from([float("nan"), 0.049999999999999996, 0.5000000000000001])).map(
        lambda v: ("holdout_fraction", v, constraint("holdout_fraction_between_0_05_and_0_5"))),
    **{f"{c}_positive": _positive(c) for c in (
        "min_training_rows", "max_attempts", "error_window", "min_error_rows", "drift_min_rows",
        "drift_window", "futile_retrains", "training_window", "max_training_rows")},
    "schedule_interval_positive": st.one_of(st.just("0"), NEGATIVE_INTERVALS).map(
        lambda v: ("schedule_interval", v, constraint("schedule_interval_positive"))),
    "schedule_interval_at_most_10_years": OVER_10_YEARS.map(
        lambda v: ("schedule_interval", v, constraint("schedule_interval_at_most_10_years"))),
    **{f"{c}_not_negative": NEGATIVE_INTERVALS.map(
        lambda v, c=c: (c, v, constraint(f"{c}_not_negative"))) for c in ("cooldown", "futile_backoff")},
    **{f"{c}_at_most_10_years": OVER_10_YEARS.map(
        lambda v, c=c: (c, v, constraint(f"{c}_at_most_10_years"))) for c in ("cooldown", "futile_backoff")},
    "estimator_is_known": st.one_of(
        hostile_text(), st.sampled_from(["Random_Forest", " logistic_regression", "svm", "auto ",
                                         "hist_gradient_boosting\n"])).filter(
        lambda s: s not in ("hist_gradient_boosting", "logistic_regression", "random_forest",
                            "auto")).map(
        lambda v: ("estimator", v, constraint("estimator_is_known"))),
}
POLICY_NOT_NULL = [c for c in POLICY_COLUMNS
                   if c not in ("schedule_interval", "error_rate_margin", "training_window")]
POLICY_TYPES = {"schedule_interval": "interval", "cooldown": "interval",
                "futile_backoff": "interval"}


def policy_corruptions():
    return st.one_of(
        *POLICY_BAD.values(),
        st.sampled_from(POLICY_NOT_NULL).map(lambda c: (c, None, not_null(c))),
        st.sampled_from(["model_name", "estimator"]).flatmap(
            lambda c: NUL_TEXTS.map(lambda t: (c, t, CLIENT_NUL))),
        st.sampled_from(["error_rate_threshold", "drift_threshold", "holdout_fraction"]).flatmap(
            lambda c: FLOAT_TEXT_OUT_OF_RANGE.map(lambda v: (c, v, FLOAT_OUT_OF_RANGE))),
    )


GOOD_POLICY_VALUES = {
    "enabled": True, "drift_alone": True, "estimator": "random_forest",
    "schedule_interval": "1 day", "cooldown": "1 hour", "futile_backoff": "1 hour",
    "drift_threshold": 1.0, "holdout_fraction": 0.2,
    **{c: 0.5 for c in ("error_rate_threshold", "min_accuracy", "accuracy_drop_tolerance",
                        "combined_max_accuracy", "error_rate_margin")},
    **{c: 7 for c in ("min_training_rows", "max_attempts", "error_window", "min_error_rows",
                      "drift_min_rows", "drift_window", "futile_retrains", "training_window",
                      "max_training_rows")},
}


def _policy_value(column):
    cast = POLICY_TYPES.get(column)
    return sql.SQL("%s::{}").format(sql.SQL(cast)) if cast else sql.SQL("%s")


def insert_policies(db: Db, rows: list[dict]) -> None:
    """One INSERT of policy rows; every row sets the same columns."""
    columns = list(rows[0])
    values = sql.SQL(", ").join(
        sql.SQL("({})").format(sql.SQL(", ").join(_policy_value(c) for c in columns))
        for _ in rows)
    db.execute(sql.SQL("INSERT INTO retrain_policies ({}) VALUES ").format(
        sql.SQL(", ").join(map(sql.Identifier, columns))) + values,
        [row[c] for row in rows for c in columns])


# -----------------------------------------------------------------------------
# 1. Every bad row is rejected, naming its rule

@fuzz(120)
@given(case=bad_training_row(), copy=st.booleans())
def test_a_bad_training_row_is_rejected_naming_its_rule(db, case, copy):
    row, rule = case
    before = db.counts()
    with pytest.raises((psycopg.Error, psycopg.DataError)) as err:
        (copy_training if copy else insert_training)(db, [row])
    assert_names_a_rule(err.value, [rule])
    assert_nothing_happened(db, before)


@fuzz(80)
@given(case=bad_metric_row(), copy=st.booleans())
def test_a_bad_metric_row_is_rejected_naming_its_rule(db, case, copy):
    row, rule = case
    before = db.counts()
    with pytest.raises(psycopg.Error) as err:
        (copy_metrics if copy else insert_metrics)(db, [row])
    assert_names_a_rule(err.value, [rule])
    assert_nothing_happened(db, before)


@fuzz(120)
@given(bad=policy_corruptions(), update=st.booleans())
def test_a_bad_policy_value_is_rejected_naming_its_rule(db, bad, update):
    """On INSERT of a new policy row, and on UPDATE of the default row."""
    column, value, rule = bad
    before = db.counts()
    with pytest.raises(psycopg.Error) as err:
        if update and column != "model_name":
            db.execute(sql.SQL("UPDATE retrain_policies SET {} = {} WHERE model_name = 'default'")
                       .format(sql.Identifier(column), _policy_value(column)), [value])
        else:
            row = {"model_name": "p", column: value} if column != "model_name" else {column: value}
            insert_policies(db, [row])
    assert_names_a_rule(err.value, [rule])
    assert_nothing_happened(db, before)
    default = db.execute("SELECT * FROM retrain_policies").fetchall()
    assert len(default) == 1


def test_every_check_constraint_of_retrain_policies_is_fuzzed(db):
    checks = {r[0] for r in db.execute(
        "SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'retrain_policies'::regclass AND contype = 'c'")}
    assert checks == set(POLICY_BAD), (
        f"not fuzzed: {sorted(checks - set(POLICY_BAD))}; gone: {sorted(set(POLICY_BAD) - checks)}")
    not_null_columns = {r[0] for r in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'retrain_policies'::regclass "
        "AND attnum > 0 AND NOT attisdropped AND attnotnull")}
    assert not_null_columns - {"model_name", "updated_at"} == set(POLICY_NOT_NULL)


@fuzz(40)
@given(corruption=training_corruptions())
def test_a_bad_update_of_training_rows_is_rejected(db, corruption):
    """An UPDATE that brings a bad value to existing rows: rejected, naming
    its rule, the rows unchanged, nothing recorded."""
    changes, rule = corruption
    (column, value), = changes.items()
    if column == "features" and value is not None:
        value = to_json_text(value)
    db.reset()
    db.execute("INSERT INTO training_data (model_name, features, label, prediction, error_rate) "
               "VALUES ('m', '{\"x\": 1}', 'a', 'b', 0.5), ('m', '{\"x\": 2}', 'a', 'a', 0)")
    db.execute("UPDATE retrain_events SET status = 'cancelled'")
    snapshot = db.execute("SELECT * FROM training_data ORDER BY id").fetchall()
    before = db.counts()
    db.take_notifications()
    cast = {"features": "::jsonb", "error_rate": "::float8"}.get(column, "")
    with pytest.raises((psycopg.Error, psycopg.DataError)) as err:
        db.execute(sql.SQL("UPDATE training_data SET {} = %s" + cast)
                   .format(sql.Identifier(column)), [value])
    assert_names_a_rule(err.value, [rule])
    assert db.execute("SELECT * FROM training_data ORDER BY id").fetchall() == snapshot
    assert_nothing_happened(db, before)


@fuzz(30)
@given(corruption=metric_corruptions())
def test_a_bad_update_of_a_metric_row_is_rejected(db, corruption):
    changes, rule = corruption
    (column, value), = changes.items()
    db.reset()
    db.execute("INSERT INTO model_metrics (model_name, accuracy, drift_score) VALUES ('m', 0.95, 0)")
    snapshot = db.execute("SELECT * FROM model_metrics").fetchall()
    before = db.counts()
    cast = "::float8" if column in ("accuracy", "drift_score") else ""
    with pytest.raises((psycopg.Error, psycopg.DataError)) as err:
        db.execute(sql.SQL("UPDATE model_metrics SET {} = %s" + cast)
                   .format(sql.Identifier(column)), [value])
    assert_names_a_rule(err.value, [rule])
    assert db.execute("SELECT * FROM model_metrics").fetchall() == snapshot
    assert_nothing_happened(db, before)


# -----------------------------------------------------------------------------
# 2. A bad row rejects the whole multi-row statement

def firing_training_row(model):
    """A row that fires error_rate by itself and brings a wrong prediction."""
    return {"model_name": model, "features": {"x": 1}, "label": "a", "prediction": "b",
            "error_rate": 0.9}


@fuzz(60)
@given(data=st.data(), copy=st.booleans())
def test_a_bad_row_rejects_the_whole_training_statement(db, data, copy):
    good = [firing_training_row(m) for m in data.draw(
        st.lists(st.sampled_from(["m", "n"]), min_size=1, max_size=4), label="good rows")]
    bad = data.draw(st.lists(bad_training_row(), min_size=1, max_size=2), label="bad rows")
    rows = list(good)
    for row, _ in bad:
        rows.insert(data.draw(st.integers(0, len(rows)), label="position"), row)
    db.reset()
    set_policy(db.conn, "n", error_window=1, min_error_rows=1, error_rate_threshold=0)
    before = db.counts()
    with pytest.raises((psycopg.Error, psycopg.DataError)) as err:
        (copy_training if copy else insert_training)(db, rows)
    assert_names_a_rule(err.value, [rule for _, rule in bad])
    assert_nothing_happened(db, before)
    # The good rows alone go in and fire: they would have been recorded.
    (copy_training if copy else insert_training)(db, good)
    assert db.scalar("SELECT count(*) FROM retrain_events") == len({r["model_name"] for r in good})
    assert len(db.take_notifications()) == len({r["model_name"] for r in good})


@fuzz(50)
@given(data=st.data(), copy=st.booleans())
def test_a_bad_row_rejects_the_whole_metrics_statement(db, data, copy):
    good = [{"model_name": m, "model_version": None, "accuracy": 0.1, "drift_score": 0.9,
             "source": "external"}
            for m in data.draw(st.lists(st.sampled_from(["m", "n"]), min_size=1, max_size=4),
                               label="good rows")]
    bad = data.draw(st.lists(bad_metric_row(), min_size=1, max_size=2), label="bad rows")
    rows = list(good)
    for row, _ in bad:
        rows.insert(data.draw(st.integers(0, len(rows)), label="position"), row)
    db.reset()
    before = db.counts()
    with pytest.raises((psycopg.Error, psycopg.DataError)) as err:
        (copy_metrics if copy else insert_metrics)(db, rows)
    assert_names_a_rule(err.value, [rule for _, rule in bad])
    assert_nothing_happened(db, before)
    (copy_metrics if copy else insert_metrics)(db, good)
    assert db.scalar("SELECT count(*) FROM retrain_events") == len({r["model_name"] for r in good})


@fuzz(40)
@given(data=st.data())
def test_a_bad_row_rejects_the_whole_policies_statement(db, data):
    column, value, rule = data.draw(policy_corruptions().filter(lambda c: c[0] != "model_name"),
                                    label="bad value")
    good = data.draw(st.integers(1, 3), label="good rows")
    rows = [{"model_name": f"p{i}", column: GOOD_POLICY_VALUES[column]} for i in range(good)]
    rows.insert(data.draw(st.integers(0, good), label="position"), {"model_name": "bad", column: value})
    before = db.counts()
    with pytest.raises(psycopg.Error) as err:
        insert_policies(db, rows)
    assert_names_a_rule(err.value, [rule])
    assert_nothing_happened(db, before)


# -----------------------------------------------------------------------------
# Hostile but valid: stored as sent, and the triggers do not crash on them

def _exact(json_text: str):
    return json.loads(json_text, parse_float=Decimal, parse_int=Decimal)


@fuzz(80)
@given(rows=st.lists(good_training_row(), min_size=1, max_size=4), how=st.sampled_from(
    ["insert", "copy", "one by one"]))
def test_hostile_but_valid_training_rows_are_stored_as_sent(db, rows, how):
    db.reset()
    if how == "insert":
        insert_training(db, rows)
    elif how == "copy":
        copy_training(db, rows)
    else:
        for row in rows:
            insert_training(db, [row])
    stored = db.execute("SELECT model_name, features::text, label, prediction, error_rate "
                        "FROM training_data ORDER BY id").fetchall()
    assert len(stored) == len(rows)
    for row, (model, features, label, prediction, error_rate) in zip(rows, stored):
        assert (model, label, prediction) == (row["model_name"], row["label"], row["prediction"])
        assert error_rate == row["error_rate"]
        # Numbers as PostgreSQL's numeric holds them: 1e400 stays 1e400.
        assert _exact(features) == _exact(to_json_text(row["features"]))
    # Default policy: error_rate > 0.1 fires, the rolling window needs 50 rows.
    firing = {r["model_name"] for r in rows if r["error_rate"] is not None and r["error_rate"] > 0.1}
    recorded = {r[0] for r in db.execute("SELECT model_name FROM retrain_events")}
    assert recorded == firing


NUL_AND_PARSER_CASES = [
    # psycopg refuses a NUL in any text parameter before sending it.
    ("INSERT INTO training_data (features, label) VALUES ('{}', %s)", ["a\x00b"], CLIENT_NUL),
    # PostgreSQL's own refusals, each naming the problem.
    ("INSERT INTO training_data (features, label) VALUES ('{}', 'a' || chr(0))", None,
     input_error("54000", "null character not permitted")),
    ("INSERT INTO training_data (features, label) VALUES ('{}', E'a\\000b')", None,
     input_error("22021", "0x00")),
    ("INSERT INTO training_data (features) VALUES (%s::jsonb)", ['{"a\\u0000": 1}'], JSON_NUL),
    ("INSERT INTO training_data (features) VALUES (%s::jsonb)", ['{"a": "\\u0000"}'], JSON_NUL),
    # JSON nested beyond PostgreSQL's parser stack: its own limit, first.
    ("INSERT INTO training_data (features) VALUES (%s::jsonb)",
     ['{"k": ' + "[" * 100_000 + "1" + "]" * 100_000 + "}"],
     input_error("54001", "stack depth limit exceeded")),
    ("INSERT INTO training_data (features) VALUES (%s::jsonb)",
     ['{"k": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"], FLAT),
    ("INSERT INTO training_data (id, features) VALUES (1, '{}')", None,
     input_error("428C9", 'cannot insert a non-DEFAULT value into column "id"')),
    ("INSERT INTO model_metrics (model_name, model_version) VALUES ('m', %s)", ["v\x00"],
     CLIENT_NUL),
]


def test_nul_characters_and_parser_limits_are_clear_errors(db):
    """What psycopg and PostgreSQL say about a NUL character (text cannot
    hold one) and JSON beyond the parser's stack: clear errors naming the
    problem. (One database for all the cases: a database costs a second.)"""
    for statement, params, rule in NUL_AND_PARSER_CASES:
        before = db.counts()
        with pytest.raises((psycopg.Error, psycopg.DataError)) as err:
            db.execute(statement, params)
        assert_names_a_rule(err.value, [rule])
        assert_nothing_happened(db, before)


BAD_COPY_LINES = [
    (b"m\t{}\ta\\000\t\\N\t\\N\n", input_error("22021", "0x00")),
    (b"m\t{\"a\": \"\\\\u0000\"}\t\\N\t\\N\t\\N\n", JSON_NUL),
    (b"m\t{}\t\\N\t\\N\t1e400\n", FLOAT_OUT_OF_RANGE),
    (b"m\t{}\ta\xff\t\\N\t\\N\n", input_error("22021", "0xff")),
    (b"m\t{}\t\\N\t\\N\tNaN\n", constraint("error_rate_between_0_and_1")),
    (b"m\t{\"a\": NaN}\t\\N\t\\N\t\\N\n", input_error("22P02", 'Token "NaN" is invalid')),
    (b"\\N\t{}\t\\N\t\\N\t\\N\n", not_null("model_name")),
    (b"m\t{}\t\\N\n", input_error("22P04", "missing data for column")),
]


def test_a_bad_copy_line_is_a_clear_error_that_rejects_the_whole_copy(db):
    """Raw COPY text, as a file from ETL: one bad line between good ones that
    would fire."""
    good = b"m\t{\"x\": 1}\ta\tb\t0.9\n"
    for line, rule in BAD_COPY_LINES:
        before = db.counts()
        with pytest.raises(psycopg.Error) as err:
            with db.conn.cursor() as cur:
                with cur.copy("COPY training_data (model_name, features, label, prediction, "
                              "error_rate) FROM STDIN") as copy:
                    copy.write(good + line + good)
        assert_names_a_rule(err.value, [rule])
        # COPY names the line (and the column, where it knows it).
        assert "COPY training_data, line 2" in (err.value.diag.context or ""), line
        assert_nothing_happened(db, before)
