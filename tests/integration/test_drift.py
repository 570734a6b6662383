"""SPEC section 6, the drift monitor, at the SQL level on a real PostgreSQL.

Baselines are stored the way the worker stores them (worker/claiming.py):
worker.drift.baseline(rows, kinds), then store_drift_baseline(...) with the
features as JSON. The recent counts are checked against a recount from
scratch in Python (tests/drift_support.py), never against the SQL itself.
"""

from __future__ import annotations

import math

import psycopg
import pytest

from tests import drift_support as ds
from tests.helpers import copy_rows, events, insert_row, run_concurrently, set_policy

M = "m"


def _baseline_model(conn, model=M, n=2000, seed=1, **policy):
    """Insert the model's baseline rows, store the baseline on them and give
    the model a quiet policy. Returns the baseline's feature rows."""
    rows = ds.feature_rows(n, seed)
    copy_rows(conn, ds.unscored(rows, model))
    ds.store_baseline(conn, model, rows)
    ds.quiet_policy(conn, model, **policy)
    return rows


# ---------------------------------------------------------------------------
# PSI: no drift, numeric drift, categorical drift
# ---------------------------------------------------------------------------


def test_same_distribution_reports_low_psi_everywhere(conn):
    _baseline_model(conn)
    copy_rows(conn, ds.scored(ds.feature_rows(1000, seed=2), M, wrong_share=0.0))

    result = ds.refresh(conn)[M]
    assert result["new_rows"] == 1000
    assert result["reported"] is True
    assert result["drift_score"] < 0.1
    assert result["accuracy"] == 1.0

    drift = ds.feature_drift(conn, M)
    assert set(drift) == {"x", "n", "color", "flag"}
    for feature, row in drift.items():
        assert row["psi"] is not None and row["psi"] < 0.1, (feature, row["psi"])
        assert row["recent_rows"] == 1000 and row["baseline_rows"] == 2000
        shares = [b["recent_share"] for b in row["bins"]]
        assert sum(shares) == pytest.approx(1.0, abs=1e-3), (feature, row["bins"])
        assert all({"bin", "label", "baseline_share", "recent_share"} <= set(b)
                   for b in row["bins"])
    assert result["drift_score"] == pytest.approx(max(r["psi"] for r in drift.values()))

    [(_, version, accuracy, score)] = ds.monitor_rows(conn, M)
    assert version == "1"
    assert accuracy == 1.0
    assert score == pytest.approx(result["drift_score"])
    assert events(conn, M) == []


@pytest.mark.parametrize(
    "wrong_share, drift_alone, expected_reason",
    [(0.15, False, "drift_and_accuracy"), (0.05, False, None), (0.05, True, "drift")],
    ids=["accuracy-0.85-fires", "accuracy-0.95-silent", "drift-alone"],
)
def test_numeric_shift_of_two_sd_is_detected_and_fires(conn, wrong_share, drift_alone,
                                                        expected_reason):
    _baseline_model(conn, drift_alone=drift_alone)
    shifted = ds.feature_rows(1000, seed=3, x_mean=2.0)
    copy_rows(conn, ds.scored(shifted, M, wrong_share=wrong_share))

    result = ds.refresh(conn)[M]
    drift = ds.feature_drift(conn, M)
    assert drift["x"]["psi"] > 0.25
    for feature in ("n", "color", "flag"):
        assert drift[feature]["psi"] < 0.1, (feature, drift[feature]["psi"])
    assert result["drift_score"] == pytest.approx(drift["x"]["psi"])
    assert result["accuracy"] == pytest.approx(1 - wrong_share)

    [(metric_id, _, accuracy, score)] = ds.monitor_rows(conn, M)
    assert accuracy == pytest.approx(1 - wrong_share)
    assert score > 0.25

    recorded = events(conn, M)
    if expected_reason is None:
        assert recorded == []
        return
    [event] = recorded
    assert event["status"] == "pending"
    assert event["reason"] == expected_reason
    assert event["reasons"] == [expected_reason]
    observed = event["details"][expected_reason]["first"]
    assert observed["metric_id"] == metric_id
    assert observed["drift_score"] == pytest.approx(score)


def test_categorical_mix_change_is_detected(conn):
    _baseline_model(conn)
    reversed_mix = tuple(reversed(ds.BASE_COLOR_WEIGHTS))
    copy_rows(conn, ds.unscored(ds.feature_rows(1000, seed=4, color_weights=reversed_mix), M))

    result = ds.refresh(conn)[M]
    drift = ds.feature_drift(conn, M)
    assert drift["color"]["psi"] > 0.25
    for feature in ("x", "n", "flag"):
        assert drift[feature]["psi"] < 0.1, (feature, drift[feature]["psi"])
    assert result["drift_score"] == pytest.approx(drift["color"]["psi"])


def test_boolean_feature_share_change_is_detected(conn):
    _baseline_model(conn)
    copy_rows(conn, ds.unscored(ds.feature_rows(1000, seed=5, flag_p=0.8), M))
    ds.refresh(conn)
    drift = ds.feature_drift(conn, M)
    assert drift["flag"]["psi"] > 0.25
    assert drift["x"]["psi"] < 0.1


# ---------------------------------------------------------------------------
# Exact incremental counts
# ---------------------------------------------------------------------------


def _messy_rows(conn, model: str, n: int, seed: int) -> list[dict]:
    """Rows from the baseline's distribution plus values that test the bin
    rules: values exactly on numeric edges, non-numbers in numeric features,
    null and absent keys, unknown categories, numbers and booleans in a
    categorical feature."""
    edges = dict(conn.execute(
        "SELECT feature, edges FROM drift_features WHERE model_name = %s AND kind = 'numeric'",
        (model,)).fetchall())
    rows = ds.feature_rows(n, seed)
    odd_x = [edges["x"][0], edges["x"][-1], edges["x"][3], "7.5", True, None, -1e300, 1e300, 0]
    odd_n = [edges["n"][0], edges["n"][-1], 2.5, "two", False, None]
    odd_color = ["purple", 7, True, None, "", "RED"]
    odd_flag = [None, "yes", 1, 0.0]
    for i, row in enumerate(rows):
        if i % 3 == 0:
            row["x"] = odd_x[(i // 3) % len(odd_x)]
        if i % 4 == 1:
            row["n"] = odd_n[(i // 4) % len(odd_n)]
        if i % 5 == 2:
            row["color"] = odd_color[(i // 5) % len(odd_color)]
        if i % 7 == 3:
            row["flag"] = odd_flag[(i // 7) % len(odd_flag)]
        if i % 11 == 4:
            row.pop("x")
        if i % 13 == 5:
            row.pop("color")
    return rows


def test_incremental_counts_equal_a_full_recount(conn):
    for model, seed in (("m1", 1), ("m2", 2)):
        _baseline_model(conn, model, n=1000, seed=seed)
    total_new = {"m1": 0, "m2": 0}

    def check(result):
        for model in ("m1", "m2"):
            total_new[model] += result.get(model, {}).get("new_rows", 0)
            ds.assert_recount(conn, model)
            assert ds.baseline_row(conn, model)["recent_rows"] == total_new[model]
        assert ds.uncounted(conn) == 0

    # 1. COPY of one model.
    copy_rows(conn, ds.unscored(_messy_rows(conn, "m1", 200, seed=10), "m1"))
    check(ds.refresh(conn))

    # 2. A multi-row INSERT whose rows alternate between the two models (their
    #    ids interleave), then single INSERTs, then one refresh for both.
    mixed = _messy_rows(conn, "m1", 40, seed=11)
    ds.insert_values(conn, [("m1" if i % 2 else "m2", f, None, None, None)
                            for i, f in enumerate(mixed)])
    for f in _messy_rows(conn, "m2", 10, seed=12):
        insert_row(conn, "m2", features=f)
    check(ds.refresh(conn))

    # 3. COPY of both models interleaved in runs of 3, a refresh of m1 only,
    #    more rows, then a refresh of everything.
    rows = _messy_rows(conn, "m2", 120, seed=13)
    copy_rows(conn, [("m1" if (i // 3) % 2 else "m2", f, None, None, None)
                     for i, f in enumerate(rows)])
    # A refresh counts every model's new rows, and reports the one asked for.
    only_m1 = ds.refresh(conn, "m1")
    assert set(only_m1) == {"m1"}
    assert only_m1["m1"]["new_rows"] == 60
    total_new["m1"] += 60
    total_new["m2"] += 60
    for model in ("m1", "m2"):
        ds.assert_recount(conn, model)
    ds.insert_values(conn, ds.unscored(_messy_rows(conn, "m1", 50, seed=14), "m1"))
    check(ds.refresh(conn))

    # 4. A refresh with nothing new changes nothing and returns no row.
    assert ds.refresh(conn) == {}
    check({})

    # 5. Rows of a model without a baseline in the same statements change
    #    nothing for the others.
    copy_rows(conn, [(("m1", "m2", "nobase")[i % 3], f, None, None, None)
                     for i, f in enumerate(_messy_rows(conn, "m1", 30, seed=15))])
    check(ds.refresh(conn))
    assert total_new == {"m1": 200 + 20 + 60 + 50 + 10, "m2": 20 + 10 + 60 + 10}


def test_rows_committed_out_of_order_are_counted_exactly_once(conn, db_url):
    _baseline_model(conn)
    first_rows = ds.feature_rows(20, seed=19)
    ds.insert_values(conn, ds.unscored(first_rows, M))
    assert ds.refresh(conn)[M]["new_rows"] == 20
    late = psycopg.connect(db_url)  # not autocommit: one open transaction
    try:
        late_ids = ds.insert_values(late, ds.unscored(ds.feature_rows(50, seed=20), M))
        late_ids += [insert_row(late, M, features=f) for f in ds.feature_rows(5, seed=21)]

        early_ids = ds.insert_values(conn, ds.unscored(ds.feature_rows(100, seed=22), M))
        assert max(late_ids) < min(early_ids)
        # The open writer holds the count back: the rows after its first id
        # are counted once it has finished, with its own.
        assert M not in ds.refresh(conn)
        ds.assert_recount(conn, M, rows=first_rows)
        assert ds.uncounted(conn, M) == 100
        writer = conn.execute("SELECT pid, seen_since <= now() FROM drift_writers").fetchall()
        assert writer == [(late.info.backend_pid, True)]

        late.commit()
    finally:
        late.close()

    second = ds.refresh(conn)[M]
    assert second["new_rows"] == 155
    ds.assert_recount(conn, M)
    assert ds.baseline_row(conn, M)["recent_rows"] == 175
    assert ds.refresh(conn) == {}
    ds.assert_recount(conn, M)


def test_rolled_back_rows_are_not_counted(conn, db_url):
    _baseline_model(conn)
    with psycopg.connect(db_url) as other:
        ds.insert_values(other, ds.unscored(ds.feature_rows(30, seed=23), M))
        other.rollback()
    copy_rows(conn, ds.unscored(ds.feature_rows(20, seed=24), M))
    assert ds.refresh(conn)[M]["new_rows"] == 20
    ds.assert_recount(conn, M)


def test_late_labels_change_the_monitor_accuracy_exactly(conn):
    _baseline_model(conn, drift_min_rows=100)
    # A labelled row from before the baseline: its label changes must not count.
    old_id = conn.execute("SELECT min(id) FROM training_data WHERE model_name = %s",
                          (M,)).fetchone()[0]
    ds.insert_values(conn, ds.scored(ds.feature_rows(300, seed=30), M, label=False))

    first = ds.refresh(conn)[M]
    assert first["new_rows"] == 300 and first["accuracy"] is None
    [(_, _, accuracy, _)] = ds.monitor_rows(conn, M)
    assert accuracy is None
    base = ds.baseline_row(conn, M)
    assert (base["labelled_rows"], base["correct_rows"]) == (0, 0)

    ids = [r[0] for r in ds.rows_since_baseline(conn, M)]
    # 200 labels arrive in one UPDATE: 150 equal the prediction, 50 do not.
    conn.execute(
        "UPDATE training_data SET label = CASE WHEN id = ANY(%s) THEN prediction "
        "ELSE (CASE prediction WHEN 'yes' THEN 'no' ELSE 'yes' END) END "
        "WHERE id = ANY(%s)", (ids[:150], ids[:200]))
    conn.execute("UPDATE training_data SET label = 'yes' WHERE id = %s", (old_id,))

    def check():
        result = ds.refresh(conn).get(M)
        labelled, correct = ds.expected_accuracy(ds.rows_since_baseline(conn, M))
        base = ds.baseline_row(conn, M)
        assert (base["labelled_rows"], base["correct_rows"]) == (labelled, correct)
        return result, labelled, correct

    result, labelled, correct = check()
    assert (labelled, correct) == (200, 150)
    assert result["new_rows"] == 0
    assert result["accuracy"] == pytest.approx(0.75)

    # Corrections: 20 right labels become wrong, 10 labels are withdrawn, a
    # prediction changes on a labelled row, 5 more labels arrive one by one.
    conn.execute("UPDATE training_data SET label = 'maybe' WHERE id = ANY(%s)", (ids[:20],))
    conn.execute("UPDATE training_data SET label = NULL WHERE id = ANY(%s)", (ids[190:200],))
    conn.execute("UPDATE training_data SET prediction = label WHERE id = %s", (ids[160],))
    for i in ids[200:205]:
        conn.execute("UPDATE training_data SET label = prediction WHERE id = %s", (i,))
    result, labelled, correct = check()
    assert (labelled, correct) == (195, 136)
    assert result["accuracy"] == pytest.approx(136 / 195)

    # The next refresh that sees new rows reports that accuracy.
    insert_row(conn, M, features=ds.feature_rows(1, seed=31)[0])
    result, labelled, correct = check()
    assert result["reported"] is True
    assert ds.monitor_rows(conn, M)[-1][2] == pytest.approx(136 / 195)


def test_late_label_of_a_row_committed_after_the_baseline_counts(conn, db_url):
    rows = ds.feature_rows(1000, seed=1)
    copy_rows(conn, ds.unscored(rows, M))
    ds.quiet_policy(conn, M, drift_min_rows=10)

    late = psycopg.connect(db_url)  # a slow ETL transaction, open across the baseline
    try:
        late_ids = ds.insert_values(late, ds.scored(ds.feature_rows(40, seed=40), M, label=False))
        other = ds.feature_rows(10, seed=41)
        other_ids = ds.insert_values(conn, ds.unscored(other, M))
        assert max(late_ids) < min(other_ids)
        # The worker's baseline describes the rows it could read: not the late ones.
        ds.store_baseline(conn, M, rows + other)
        late.commit()
    finally:
        late.close()

    first = ds.refresh(conn)[M]
    assert first["new_rows"] == 40           # the late rows are "since the baseline"
    late_rows = conn.execute(
        "SELECT id, features, label, prediction FROM training_data WHERE id = ANY(%s)",
        (late_ids,)).fetchall()
    ds.assert_recount(conn, M, rows=[r[1] for r in late_rows])

    # Their labels arrive: 30 right, 10 wrong.
    conn.execute(
        "UPDATE training_data SET label = CASE WHEN id = ANY(%s) THEN prediction "
        "ELSE 'wrong' END WHERE id = ANY(%s)", (late_ids[:30], late_ids))
    result = ds.refresh(conn).get(M)
    base = ds.baseline_row(conn, M)
    assert (base["labelled_rows"], base["correct_rows"]) == (40, 30)
    assert result is not None and result["accuracy"] == pytest.approx(0.75)


# ---------------------------------------------------------------------------
# No baseline, drift_min_rows
# ---------------------------------------------------------------------------


def test_model_without_baseline_reports_nothing_and_keeps_nothing(conn):
    set_policy(conn, "nobase", schedule_interval=None, drift_min_rows=1)
    copy_rows(conn, ds.scored(ds.feature_rows(300, seed=50), "nobase", wrong_share=0.5))
    row = insert_row(conn, "nobase", features={"x": 1.0}, prediction="a")
    conn.execute("UPDATE training_data SET label = 'a' WHERE id = %s", (row,))
    assert ds.uncounted(conn, "nobase") > 0

    assert "nobase" not in ds.refresh(conn)
    assert ds.uncounted(conn, "nobase") == 0
    assert ds.monitor_rows(conn, "nobase") == []
    assert ds.feature_drift(conn, "nobase") == {}

    # Same with a refresh of that model only.
    insert_row(conn, "nobase", features={"x": 2.0})
    assert ds.refresh(conn, "nobase") == {}
    assert ds.uncounted(conn, "nobase") == 0
    assert ds.monitor_rows(conn, "nobase") == []


def test_monitor_waits_for_drift_min_rows_then_reports_each_refresh_with_new_rows(conn):
    _baseline_model(conn, drift_min_rows=100)
    copy_rows(conn, ds.unscored(ds.feature_rows(60, seed=60), M))
    first = ds.refresh(conn)[M]
    assert first["new_rows"] == 60 and first["reported"] is False
    assert ds.monitor_rows(conn, M) == []

    copy_rows(conn, ds.unscored(ds.feature_rows(39, seed=61), M))
    assert ds.refresh(conn)[M]["reported"] is False     # 99 rows
    assert ds.monitor_rows(conn, M) == []

    insert_row(conn, M, features=ds.feature_rows(1, seed=62)[0])
    third = ds.refresh(conn)[M]                           # 100 rows
    assert third["reported"] is True
    assert len(ds.monitor_rows(conn, M)) == 1

    assert ds.refresh(conn) == {}                         # nothing new: no row
    assert len(ds.monitor_rows(conn, M)) == 1

    insert_row(conn, M, features=ds.feature_rows(1, seed=63)[0])
    assert ds.refresh(conn)[M]["reported"] is True
    monitor = ds.monitor_rows(conn, M)
    assert len(monitor) == 2
    assert all(version == "1" and score is not None for _, version, _, score in monitor)


def test_a_new_baseline_restarts_the_counts(conn):
    _baseline_model(conn, drift_min_rows=50)
    copy_rows(conn, ds.unscored(ds.feature_rows(100, seed=70, x_mean=2.0), M))
    copy_rows(conn, ds.scored(ds.feature_rows(100, seed=71, x_mean=2.0), M, wrong_share=0.5))
    assert ds.refresh(conn)[M]["drift_score"] > 0.25

    # Retrained on where the inputs are now: shifted rows are no drift.
    ds.store_baseline(conn, M, ds.feature_rows(1000, seed=72, x_mean=2.0), version="2")
    base = ds.baseline_row(conn, M)
    assert (base["recent_rows"], base["labelled_rows"], base["correct_rows"]) == (0, 0, 0)
    assert base["model_version"] == "2"
    copy_rows(conn, ds.unscored(ds.feature_rows(300, seed=73, x_mean=2.0), M))
    result = ds.refresh(conn)[M]
    assert result["new_rows"] == 300
    assert result["drift_score"] < 0.1
    assert ds.monitor_rows(conn, M)[-1][1] == "2"
    ds.assert_recount(conn, M)


# ---------------------------------------------------------------------------
# Features that appear or disappear; messy values
# ---------------------------------------------------------------------------


def test_unseen_feature_is_reported_unscored_and_missing_feature_drifts(conn):
    _baseline_model(conn, drift_min_rows=10)
    new = ds.feature_rows(300, seed=80, drop=("n",), extra={"z": "new"})
    for i, row in enumerate(new):
        if i % 10 == 0:
            row["w"] = None   # another new key, always null
    copy_rows(conn, ds.unscored(new, M))

    result = ds.refresh(conn)[M]
    drift = ds.feature_drift(conn, M)
    assert drift["z"]["kind"] == "unseen" and drift["z"]["psi"] is None
    assert drift["w"]["kind"] == "unseen" and drift["w"]["psi"] is None
    assert drift["z"]["recent_rows"] == 300
    assert drift["n"]["psi"] > 1.0                       # all in the missing bin
    missing = [b for b in drift["n"]["bins"] if b["bin"] == -1][0]
    assert missing["recent_share"] == 1.0 and missing["baseline_share"] == 0.0
    assert result["drift_score"] == pytest.approx(drift["n"]["psi"])
    assert math.isfinite(result["drift_score"])
    for feature in ("x", "color", "flag"):
        assert drift[feature]["psi"] < 0.1

    # More rows with the new key: counted on, still unscored, no error.
    copy_rows(conn, ds.unscored(ds.feature_rows(100, seed=81, extra={"z": 1}), M))
    ds.refresh(conn)
    drift = ds.feature_drift(conn, M)
    assert drift["z"]["kind"] == "unseen" and drift["z"]["psi"] is None
    present = conn.execute(
        "SELECT recent_count FROM drift_bins WHERE model_name = %s AND feature = 'z'",
        (M,)).fetchall()
    assert present == [(400,)]
    ds.assert_recount(conn, M)


def test_a_categorical_feature_that_disappears_drifts(conn):
    _baseline_model(conn)
    copy_rows(conn, ds.unscored(ds.feature_rows(500, seed=82, drop=("color",)), M))
    ds.refresh(conn)
    assert ds.feature_drift(conn, M)["color"]["psi"] > 1.0


def test_a_number_outside_double_precision_does_not_break_the_refresh(conn):
    _baseline_model(conn)
    conn.execute("INSERT INTO training_data (model_name, features) VALUES "
                 "(%s, '{\"x\": 1e400, \"n\": -1e-400, \"color\": \"red\", \"flag\": true}')",
                 (M,))
    copy_rows(conn, ds.unscored(ds.feature_rows(10, seed=83), M))
    result = ds.refresh(conn)[M]
    assert result["new_rows"] == 11
    assert ds.uncounted(conn, M) == 0
    # Such numbers fall in the outermost bins (1e-400 is 0); each row is
    # counted once per feature, every bin exactly.
    per_feature = dict(conn.execute(
        "SELECT feature, sum(recent_count) FROM drift_bins WHERE model_name = %s "
        "GROUP BY feature", (M,)).fetchall())
    assert per_feature == {"x": 11, "n": 11, "color": 11, "flag": 11}
    expected = ds.expected_counts(conn, M, [r[1] for r in ds.rows_since_baseline(conn, M)])
    stored = ds.stored_counts(conn, M)
    for (feature, bin_), count in stored.items():
        assert count == expected.get((feature, bin_), 0), (feature, bin_)
    top_bin = max(b for (f, b) in stored if f == "x")
    assert stored[("x", top_bin)] >= 1


# ---------------------------------------------------------------------------
# Concurrency and cost
# ---------------------------------------------------------------------------


def test_concurrent_refreshes_and_inserts_count_every_row_once(conn, db_url):
    for model, seed in (("m1", 1), ("m2", 2)):
        _baseline_model(conn, model, n=1000, seed=seed, drift_min_rows=20)
    # Rows waiting before anyone refreshes: many inbox entries.
    for i in range(20):
        copy_rows(conn, ds.scored(ds.feature_rows(10, seed=100 + i, x_mean=1.5),
                                  ("m1", "m2")[i % 2], wrong_share=0.2))
    threads, rounds, batch = 4, 6, 16

    def work(c, i):
        seen = {"m1": 0, "m2": 0}
        for r in range(rounds):
            features = ds.feature_rows(batch, seed=1000 * i + r, x_mean=1.5)
            rows = ds.scored(features, "m1", wrong_share=0.2)
            # Both models in one statement, ids interleaved.
            rows = [(("m1", "m2")[j % 2], *row[1:]) for j, row in enumerate(rows)]
            if r % 2:
                copy_rows(c, rows)
            else:
                ds.insert_values(c, rows)
            for model, result in ds.refresh(c).items():
                seen[model] += result["new_rows"]
        return seen

    def refresh_only(c, i):
        return {model: r["new_rows"] for model, r in ds.refresh(c).items()}

    # First: several connections refresh the waiting rows at once.
    first = run_concurrently(db_url, threads, refresh_only)
    assert sum(r.get("m1", 0) for r in first) == 100
    assert sum(r.get("m2", 0) for r in first) == 100
    for model in ("m1", "m2"):
        ds.assert_recount(conn, model)
    # Then: inserts and refreshes interleave on every connection.
    results = run_concurrently(db_url, threads, work)
    final = ds.refresh(conn)
    per_model = threads * rounds * batch // 2
    for model in ("m1", "m2"):
        seen = sum(r[model] for r in results) + final.get(model, {}).get("new_rows", 0)
        assert seen == per_model, (model, seen)
        ds.assert_recount(conn, model)
        assert ds.baseline_row(conn, model)["recent_rows"] == 100 + per_model
        labelled, correct = ds.expected_accuracy(ds.rows_since_baseline(conn, model))
        base = ds.baseline_row(conn, model)
        assert (base["labelled_rows"], base["correct_rows"]) == (labelled, correct)
    assert ds.uncounted(conn) == 0


def _table_reads(conn) -> tuple[int, int]:
    """(sequential scans, tuples read) on training_data in this transaction."""
    seq_scan, seq_read, idx_fetch = conn.execute(
        "SELECT seq_scan, seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables "
        "WHERE relname = 'training_data'").fetchone()
    return seq_scan, seq_read + idx_fetch


@pytest.mark.parametrize("older_rows", [10_000, 200_000])
def test_refresh_work_follows_the_new_rows_not_the_table(conn, older_rows):
    # The table's older rows: the model's own from before the baseline, and
    # another model's.
    conn.execute(
        "INSERT INTO training_data (model_name, features, label) "
        "SELECT CASE WHEN g %% 2 = 0 THEN %s ELSE 'other' END, "
        "       jsonb_build_object('x', random(), 'n', g %% 6, 'color', 'red', 'flag', g %% 3 = 0), "
        "       CASE WHEN g %% 4 = 0 THEN 'yes' END "
        "FROM generate_series(1, %s) AS g", (M, older_rows))
    _baseline_model(conn, n=1000)
    ds.refresh(conn)        # counts past the older rows
    conn.execute("ANALYZE training_data")
    # What this backend read so far reaches the statistics before the
    # measured transaction (pg_stat_xact_* also shows counts not yet flushed).
    conn.execute("SELECT pg_stat_force_next_flush()")
    new = 500
    for i in range(5):      # several statements
        copy_rows(conn, ds.unscored(ds.feature_rows(new // 5, seed=90 + i), M))

    with conn.transaction():
        result = ds.refresh(conn)
        seq_scans, tuples_read = _table_reads(conn)
    assert result[M]["new_rows"] == new
    assert ds.uncounted(conn) == 0
    ds.assert_recount(conn, M)
    # The work done on training_data: the new rows, not the table.
    assert seq_scans == 0, f"refresh scanned training_data sequentially ({tuples_read} tuples)"
    assert tuples_read <= 2 * new + 50, tuples_read


# ---------------------------------------------------------------------------
# The counting horizon: what holds it back, and what a refresh never waits for
# ---------------------------------------------------------------------------


def test_a_refresh_does_not_wait_while_training_data_is_locked_exclusively(conn, db_url):
    _baseline_model(conn)
    rows = ds.feature_rows(30, seed=60)
    ds.insert_values(conn, ds.unscored(rows, M))
    with psycopg.connect(db_url) as ddl:
        ddl.execute("LOCK TABLE training_data IN ACCESS EXCLUSIVE MODE")
        conn.execute("SET lock_timeout = '5s'")
        try:
            assert ds.refresh(conn) == {}  # nothing counted, and no wait
        finally:
            conn.execute("RESET lock_timeout")
    assert ds.refresh(conn)[M]["new_rows"] == 30
    ds.assert_recount(conn, M, rows)


def test_a_model_whose_lock_is_held_is_reported_by_the_next_refresh(conn, db_url):
    for model in ("busy", "free"):
        _baseline_model(conn, model, n=500, drift_min_rows=10)
        ds.insert_values(conn, ds.unscored(ds.feature_rows(20, seed=61), model))
    with psycopg.connect(db_url) as writer:
        # A writer of "busy" that fired something holds the model's lock to
        # its commit; the refresh counts the model's rows but reports later.
        writer.execute("SELECT retrain_lock_model('busy')")
        result = ds.refresh(conn)
        assert result["busy"]["new_rows"] == 20 and result["busy"]["reported"] is False
        assert result["free"]["reported"] is True
        assert ds.monitor_rows(conn, "busy") == []
    again = ds.refresh(conn)
    assert again["busy"]["new_rows"] == 0 and again["busy"]["reported"] is True
    assert "free" not in again
    assert len(ds.monitor_rows(conn, "busy")) == 1
    assert ds.refresh(conn) == {}


def test_rows_after_truncate_restart_identity_are_counted(conn):
    _baseline_model(conn)
    ds.refresh(conn)
    conn.execute("TRUNCATE training_data RESTART IDENTITY")
    rows = ds.feature_rows(40, seed=62)
    ids = ds.insert_values(conn, ds.unscored(rows, M))
    assert min(ids) == 1
    assert ds.refresh(conn)[M]["new_rows"] == 40
    ds.assert_recount(conn, M, rows)


def test_the_monitor_counts_only_in_read_committed(conn):
    _baseline_model(conn)
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="READ COMMITTED"):
            conn.execute("SELECT * FROM refresh_drift()")
    finally:
        conn.execute("ROLLBACK")


def test_an_id_sequence_that_caches_values_is_refused_with_the_fix(conn):
    _baseline_model(conn)
    conn.execute("ALTER TABLE training_data ALTER COLUMN id SET CACHE 20")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as raised:
        conn.execute("SELECT * FROM refresh_drift()")
    fix = raised.value.diag.message_hint
    assert fix == ("ALTER TABLE training_data ALTER COLUMN id "
                   "SET CACHE 1 SET INCREMENT BY 1 SET NO CYCLE")
    conn.execute(fix)
    ds.refresh(conn)


def test_an_id_of_its_own_above_the_sequence_does_not_hide_later_rows(conn):
    _baseline_model(conn)
    first = ds.feature_rows(5, seed=63)
    ds.insert_values(conn, ds.unscored(first, M))
    ds.refresh(conn)
    far = conn.execute(
        "INSERT INTO training_data (id, model_name, features) OVERRIDING SYSTEM VALUE "
        "VALUES ((SELECT max(id) FROM training_data) + 1000, %s, '{\"x\": 0.5}') RETURNING id",
        (M,)).fetchone()[0]
    later = ds.feature_rows(5, seed=64)
    ids = ds.insert_values(conn, ds.unscored(later, M))
    assert max(ids) < far
    ds.refresh(conn)
    # The sequence's rows below the far id are all counted; the far row waits
    # until the sequence has passed it.
    ds.assert_recount(conn, M, first + later)


def test_a_truncate_in_progress_neither_stalls_a_refresh_nor_deadlocks(conn, db_url):
    for model in ("busy", "other"):
        _baseline_model(conn, model, n=500, drift_min_rows=10)
        ds.insert_values(conn, ds.unscored(ds.feature_rows(20, seed=65), model))
    with psycopg.connect(db_url) as writer:
        writer.execute("SELECT retrain_lock_model('busy')")
        assert ds.refresh(conn)["busy"]["reported"] is False  # report deferred
    with psycopg.connect(db_url) as etl:
        etl.execute("TRUNCATE training_data")
        conn.execute("SET lock_timeout = '5s'")
        try:
            ds.refresh(conn)  # counts nothing (training_data is locked), waits for nothing
        finally:
            conn.execute("RESET lock_timeout")
        # The reload that follows the truncate goes through, in the same transaction.
        ds.insert_values(etl, ds.scored(ds.feature_rows(5, seed=66), "busy", wrong_share=1.0))
        etl.commit()
    assert ds.refresh(conn)["busy"]["new_rows"] == 5


def test_one_models_failing_report_does_not_stop_the_others(conn):
    for model in ("a", "b"):
        _baseline_model(conn, model, n=500, drift_min_rows=10)
    conn.execute("""
        CREATE FUNCTION reject_a() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.model_name = 'a' THEN RAISE EXCEPTION 'no metrics for a'; END IF;
            RETURN NEW;
        END $$""")
    conn.execute("CREATE TRIGGER reject_a BEFORE INSERT ON model_metrics "
                 "FOR EACH ROW EXECUTE FUNCTION reject_a()")
    for model in ("a", "b"):
        ds.insert_values(conn, ds.unscored(ds.feature_rows(20, seed=67), model))
    result = ds.refresh(conn)
    assert result["a"]["reported"] is False and result["b"]["reported"] is True
    assert result["a"]["new_rows"] == 20
    ds.assert_recount(conn, "a")
    conn.execute("DROP TRIGGER reject_a ON model_metrics")
    assert ds.refresh(conn)["a"]["reported"] is True  # still due, reported now


def test_a_deferred_report_is_written_before_the_baseline_moves(conn, db_url):
    rows = _baseline_model(conn, n=500, drift_min_rows=10)
    ds.insert_values(conn, ds.unscored(ds.feature_rows(50, seed=68, x_mean=3.0), M))
    with psycopg.connect(db_url) as writer:
        writer.execute("SELECT retrain_lock_model(%s)", (M,))
        assert ds.refresh(conn)[M]["reported"] is False
    # The retrain's new baseline: what was seen against the old one is reported first.
    ds.store_baseline(conn, M, rows, version="2")
    [(_, version, _, drift_score)] = ds.monitor_rows(conn, M)
    assert version == "1" and drift_score > 0.25


def test_many_gaps_above_the_horizon_when_a_baseline_is_stored_count_exactly(conn, db_url):
    rows = ds.feature_rows(500, seed=69)
    copy_rows(conn, ds.unscored(rows, M))
    ds.quiet_policy(conn, M, drift_min_rows=10)
    with psycopg.connect(db_url) as late:
        # An open writer holds the horizon; above it, committed rows and the
        # ids of rolled-back statements alternate: many runs of visible ids.
        late_ids = ds.insert_values(late, ds.unscored(ds.feature_rows(3, seed=70), M))
        with psycopg.connect(db_url) as other:
            for i in range(200):
                ds.insert_values(other, ds.unscored(ds.feature_rows(1, seed=71 + i), M))
                other.commit()
                ds.insert_values(other, ds.unscored(ds.feature_rows(1, seed=71 + i), M))
                other.rollback()
        ds.store_baseline(conn, M, rows)
        runs = conn.execute("SELECT count(*) FROM drift_baselines, unnest(before_ids) "
                            "WHERE model_name = %s", (M,)).fetchone()[0]
        assert runs >= 200
        late.commit()
    after = ds.feature_rows(30, seed=72)
    ds.insert_values(conn, ds.unscored(after, M))
    ds.refresh(conn)
    late_rows = [r[0] for r in conn.execute(
        "SELECT features FROM training_data WHERE id = ANY (%s) ORDER BY id", (late_ids,))]
    ds.assert_recount(conn, M, late_rows + after)


def test_a_label_that_arrives_while_the_first_baseline_is_stored_counts(conn, db_url):
    rows = ds.feature_rows(100, seed=73)
    copy_rows(conn, ds.unscored(rows, M))
    ds.quiet_policy(conn, M, drift_min_rows=1)
    ds.refresh(conn)
    with psycopg.connect(db_url) as writer, psycopg.connect(db_url) as outcome, \
            psycopg.connect(db_url) as labeller:
        late = ds.insert_values(writer, ds.scored(ds.feature_rows(1, seed=74), M, label=False))[0]
        ds.store_baseline(outcome, M, rows)       # the worker's outcome transaction, open
        writer.commit()                           # a row committed after the baseline
        labeller.execute("UPDATE training_data SET label = prediction WHERE id = %s", (late,))
        outcome.commit()                          # the UPDATE saw no baseline
        ds.refresh(conn)
        labeller.commit()
    ds.refresh(conn)
    base = ds.baseline_row(conn, M)
    assert (base["recent_rows"], base["labelled_rows"], base["correct_rows"]) == (1, 1, 1)


def test_the_writer_holding_the_count_back_is_named(conn, db_url):
    from worker.queries import query

    _baseline_model(conn)
    with psycopg.connect(db_url) as writer:
        ds.insert_values(writer, ds.unscored(ds.feature_rows(3, seed=75), M))
        ds.insert_values(conn, ds.unscored(ds.feature_rows(7, seed=76), M))
        ds.refresh(conn)
        pid, gid, since, waiting = conn.execute(query("long_drift_writer"),
                                                {"older_than": "0 seconds"}).fetchone()
        assert (pid, gid, waiting) == (writer.info.backend_pid, None, 10)
        writer.commit()
    ds.refresh(conn)
    assert conn.execute(query("long_drift_writer"), {"older_than": "0 seconds"}).fetchone() is None


def test_storing_a_baseline_that_waits_for_a_writer_holds_up_no_refresh(conn, db_url):
    import threading

    from tests.helpers import wait_until_blocked

    rows = _baseline_model(conn, n=500, drift_min_rows=10)
    ds.insert_values(conn, ds.unscored(ds.feature_rows(50, seed=75, x_mean=3.0), M))
    with psycopg.connect(db_url) as writer, psycopg.connect(db_url) as outcome:
        writer.execute("SELECT retrain_lock_model(%s)", (M,))  # an ETL transaction, open
        assert ds.refresh(conn)[M]["reported"] is False  # the report is due
        # A worker records the retrain's outcome: it must report first, and
        # so waits for the writer.
        stored = threading.Thread(target=ds.store_baseline, args=(outcome, M, rows),
                                  kwargs={"version": "2"})
        stored.start()
        try:
            wait_until_blocked(conn)
            # Meanwhile every other worker refreshes before it claims.
            with psycopg.connect(db_url, autocommit=True) as other:
                other.execute("SET lock_timeout = '5s'")
                other.execute("SELECT * FROM refresh_drift()").fetchall()
        finally:
            writer.commit()
            stored.join(timeout=30)
        assert not stored.is_alive()
        outcome.commit()
    [(_, version, _, drift_score)] = ds.monitor_rows(conn, M)
    assert version == "1" and drift_score > 0.25


def test_a_report_a_running_refresh_makes_due_is_written_before_the_baseline_moves(conn,
                                                                                  db_url):
    import threading

    from tests.helpers import wait_until_blocked

    rows = _baseline_model(conn, n=500, drift_min_rows=10)
    ds.refresh(conn)  # nothing due
    ds.insert_values(conn, ds.unscored(ds.feature_rows(80, seed=76, x_mean=3.0), M))
    with psycopg.connect(db_url) as writer, psycopg.connect(db_url) as refresher, \
            psycopg.connect(db_url) as outcome:
        writer.execute("SELECT retrain_lock_model(%s)", (M,))  # an open writer of the model
        # A refresh, not committed yet: it counted the rows, could not report.
        refresher.execute("SELECT * FROM refresh_drift()").fetchall()
        stored = threading.Thread(target=ds.store_baseline, args=(outcome, M, rows),
                                  kwargs={"version": "2"})
        stored.start()
        try:
            wait_until_blocked(conn)
            refresher.commit()  # the report is due now
        finally:
            writer.commit()
            stored.join(timeout=30)
        assert not stored.is_alive()
        outcome.commit()
    [(_, version, _, drift_score)] = ds.monitor_rows(conn, M)
    assert version == "1" and drift_score > 0.25
