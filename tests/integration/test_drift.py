"""SPEC section 6, the drift monitor, at the SQL level on a real PostgreSQL.

Baselines are stored the way the worker stores them (worker/claiming.py):
worker.drift.baseline(rows, kinds), then store_drift_baseline(...) with the
features as JSON. The window's counts are checked against a recount from
scratch in Python (tests/drift_support.py), never against the SQL itself.
"""

from __future__ import annotations

import psycopg
import pytest

from tests import drift_support as ds
from tests.helpers import copy_rows, events, insert_row, run_concurrently

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
    assert result["window_rows"] == 1000
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


def test_a_late_shift_shows_at_full_strength_however_long_ago_the_baseline_was(conn):
    # The case that a monitor counting every row since the baseline got
    # wrong (drift 0.17): 8,000 quiet rows, then 1,200 shifted by 2.5 sd.
    _baseline_model(conn, n=5000)
    copy_rows(conn, ds.unscored(ds.feature_rows(8000, seed=6), M))
    quiet = ds.refresh(conn)[M]
    assert quiet["drift_score"] < 0.1
    copy_rows(conn, ds.unscored(ds.feature_rows(1200, seed=7, x_mean=2.5), M))

    result = ds.refresh(conn)[M]
    assert result["window_rows"] == 1000
    assert result["drift_score"] > 0.25
    ds.assert_recount(conn, M)


# ---------------------------------------------------------------------------
# The window: exact counts, late commits, labels
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


def test_the_window_counts_equal_a_recount_after_every_refresh(conn):
    for model, seed in (("m1", 1), ("m2", 2)):
        _baseline_model(conn, model, n=1000, seed=seed, drift_window=300)

    def check(expected_rows):
        for model in ("m1", "m2"):
            ds.assert_recount(conn, model)
            assert ds.baseline_row(conn, model)["recent_rows"] == expected_rows[model]

    # 1. A COPY of one model.
    copy_rows(conn, ds.unscored(_messy_rows(conn, "m1", 200, seed=10), "m1"))
    assert ds.refresh(conn)["m1"]["window_rows"] == 200
    check({"m1": 200, "m2": 0})

    # 2. A multi-row INSERT whose rows alternate between the two models (their
    #    ids interleave), then single INSERTs: m1's window fills and slides.
    mixed = _messy_rows(conn, "m1", 240, seed=11)
    ds.insert_values(conn, [("m1" if i % 2 else "m2", f, None, None, None)
                            for i, f in enumerate(mixed)])
    for f in _messy_rows(conn, "m2", 10, seed=12):
        insert_row(conn, "m2", features=f)
    result = ds.refresh(conn)
    assert (result["m1"]["window_rows"], result["m2"]["window_rows"]) == (300, 130)
    check({"m1": 300, "m2": 130})

    # 3. A refresh of one model leaves the other as it was.
    copy_rows(conn, [("m1" if (i // 3) % 2 else "m2", f, None, None, None)
                     for i, f in enumerate(_messy_rows(conn, "m2", 120, seed=13))])
    assert set(ds.refresh(conn, "m1")) == {"m1"}
    assert ds.baseline_row(conn, "m2")["recent_rows"] == 130
    ds.refresh(conn)
    check({"m1": 300, "m2": 190})

    # 4. Nothing new: no row, nothing changes.
    assert ds.refresh(conn) == {}
    check({"m1": 300, "m2": 190})

    # 5. Rows of a model without a baseline change nothing for the others.
    copy_rows(conn, [("nobase", f, None, None, None) for f in ds.feature_rows(30, seed=15)])
    assert ds.refresh(conn) == {}


def test_a_row_that_commits_late_is_in_the_window_once_visible(conn, db_url):
    _baseline_model(conn, drift_window=120)
    ds.insert_values(conn, ds.unscored(ds.feature_rows(20, seed=19), M))
    assert ds.refresh(conn)[M]["window_rows"] == 20
    with psycopg.connect(db_url) as late:  # one open transaction
        late_ids = ds.insert_values(late, ds.unscored(ds.feature_rows(50, seed=20), M))
        early_ids = ds.insert_values(conn, ds.unscored(ds.feature_rows(60, seed=22), M))
        assert max(late_ids) < min(early_ids)
        # Not visible yet: the window holds what is.
        assert ds.refresh(conn)[M]["window_rows"] == 80
        ds.assert_recount(conn, M)
        late.commit()
    # Visible now, and among the newest 120: 10 of the first rows slid out.
    assert ds.refresh(conn)[M]["window_rows"] == 120
    window_ids = [r[0] for r in ds.recent_window(conn, M)]
    assert set(late_ids) <= set(window_ids)
    ds.assert_recount(conn, M)
    assert ds.refresh(conn) == {}


def test_rolled_back_rows_are_not_counted(conn, db_url):
    _baseline_model(conn)
    with psycopg.connect(db_url) as other:
        ds.insert_values(other, ds.unscored(ds.feature_rows(30, seed=23), M))
        other.rollback()
    copy_rows(conn, ds.unscored(ds.feature_rows(20, seed=24), M))
    assert ds.refresh(conn)[M]["window_rows"] == 20
    ds.assert_recount(conn, M)


def test_labels_that_arrive_later_change_the_monitor_accuracy(conn):
    _baseline_model(conn, drift_min_rows=100)
    # A labelled row from before the baseline: its label must not count.
    old_id = conn.execute("SELECT min(id) FROM training_data WHERE model_name = %s",
                          (M,)).fetchone()[0]
    ds.insert_values(conn, ds.scored(ds.feature_rows(300, seed=30), M, label=False))

    first = ds.refresh(conn)[M]
    assert first["window_rows"] == 300 and first["accuracy"] is None
    [(_, _, accuracy, _)] = ds.monitor_rows(conn, M)
    assert accuracy is None

    ids = [r[0] for r in ds.recent_window(conn, M)]
    # 200 labels arrive in one UPDATE: 150 equal the prediction, 50 do not.
    conn.execute(
        "UPDATE training_data SET label = CASE WHEN id = ANY(%s) THEN prediction "
        "ELSE (CASE prediction WHEN 'yes' THEN 'no' ELSE 'yes' END) END "
        "WHERE id = ANY(%s)", (ids[:150], ids[:200]))
    conn.execute("UPDATE training_data SET label = 'yes' WHERE id = %s", (old_id,))

    def check():
        result = ds.refresh(conn)[M]
        labelled, correct = ds.expected_accuracy(ds.recent_window(conn, M))
        base = ds.baseline_row(conn, M)
        assert (base["labelled_rows"], base["correct_rows"]) == (labelled, correct)
        assert result["reported"] is True
        assert ds.monitor_rows(conn, M)[-1][2] == pytest.approx(correct / labelled)
        return result, labelled, correct

    result, labelled, correct = check()
    assert (labelled, correct) == (200, 150)
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
    assert len(ds.monitor_rows(conn, M)) == 3


# ---------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------


def test_model_without_baseline_reports_nothing(conn):
    ds.quiet_policy(conn, M)
    copy_rows(conn, ds.unscored(ds.feature_rows(500, seed=50), M))
    assert ds.refresh(conn) == {}
    assert ds.monitor_rows(conn, M) == []


def test_monitor_waits_for_drift_min_rows_then_reports_each_refresh_with_new_rows(conn):
    _baseline_model(conn, drift_min_rows=100)
    copy_rows(conn, ds.unscored(ds.feature_rows(60, seed=51), M))
    assert ds.refresh(conn)[M]["reported"] is False
    copy_rows(conn, ds.unscored(ds.feature_rows(60, seed=52), M))
    assert ds.refresh(conn)[M]["reported"] is True
    assert ds.refresh(conn) == {}
    insert_row(conn, M, features=ds.feature_rows(1, seed=53)[0])
    assert ds.refresh(conn)[M]["reported"] is True
    assert len(ds.monitor_rows(conn, M)) == 2


def test_a_new_baseline_restarts_the_window(conn):
    rows = _baseline_model(conn)
    shifted = ds.feature_rows(500, seed=54, x_mean=3.0)
    copy_rows(conn, ds.unscored(shifted, M))
    assert ds.refresh(conn)[M]["drift_score"] > 0.25
    ds.store_baseline(conn, M, shifted, version="2")
    assert ds.baseline_row(conn, M)["recent_rows"] == 0
    copy_rows(conn, ds.unscored(ds.feature_rows(300, seed=55, x_mean=3.0), M))
    result = ds.refresh(conn)[M]
    assert result["window_rows"] == 300 and result["drift_score"] < 0.25
    assert ds.monitor_rows(conn, M)[-1][1] == "2"
    assert rows  # the first baseline's rows stay in training_data


def test_a_missing_feature_drifts_and_a_new_one_is_ignored(conn):
    _baseline_model(conn)
    copy_rows(conn, ds.unscored(ds.feature_rows(500, seed=56, drop=("color",),
                                                 extra={"new": 1}), M))
    ds.refresh(conn)
    drift = ds.feature_drift(conn, M)
    assert set(drift) == {"x", "n", "color", "flag"}
    assert drift["color"]["psi"] > 1.0   # every value landed in "missing"
    assert drift["x"]["psi"] < 0.1


def test_a_number_outside_double_precision_does_not_break_the_refresh(conn):
    _baseline_model(conn)
    conn.execute("INSERT INTO training_data (model_name, features) VALUES "
                 "(%s, '{\"x\": 1e400, \"n\": -1e400}'), (%s, '{\"x\": 1e-400}')", (M, M))
    assert ds.refresh(conn)[M]["window_rows"] == 2
    ds.assert_recount(conn, M)


def test_a_model_whose_lock_is_held_is_reported_by_the_next_refresh(conn, db_url):
    _baseline_model(conn, drift_min_rows=10)
    with psycopg.connect(db_url) as writer:
        writer.execute("SELECT retrain_lock_model(%s)", (M,))   # as a writer of it would
        copy_rows(conn, ds.unscored(ds.feature_rows(50, seed=57), M))
        assert ds.refresh(conn)[M]["reported"] is False
        assert ds.monitor_rows(conn, M) == []
    assert ds.refresh(conn)[M]["reported"] is True
    assert len(ds.monitor_rows(conn, M)) == 1


def test_one_models_failing_report_does_not_stop_the_others(conn):
    for model in ("a", "b"):
        _baseline_model(conn, model, n=500, drift_min_rows=10)
    conn.execute("""
        CREATE FUNCTION refuse_a() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.model_name = 'a' THEN RAISE EXCEPTION 'no'; END IF; RETURN NEW; END $$""")
    conn.execute("CREATE TRIGGER refuse_a BEFORE INSERT ON model_metrics "
                 "FOR EACH ROW EXECUTE FUNCTION refuse_a()")
    for model in ("a", "b"):
        copy_rows(conn, ds.unscored(ds.feature_rows(20, seed=58), model))
    notices = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
    assert set(ds.refresh(conn)) == {"b"}
    assert any("model a failed" in n for n in notices)
    conn.execute("DROP TRIGGER refuse_a ON model_metrics")
    assert ds.refresh(conn)["a"]["reported"] is True


def test_concurrent_refreshes_and_inserts_keep_the_window_exact(conn, db_url):
    _baseline_model(conn, drift_window=500)

    def work(c, i):
        for round_ in range(5):
            if i < 2:
                copy_rows(c, ds.unscored(ds.feature_rows(40, seed=100 * i + round_), M))
            else:
                ds.refresh(c)

    run_concurrently(db_url, 4, work)
    ds.refresh(conn)
    ds.assert_recount(conn, M)
    assert ds.baseline_row(conn, M)["recent_rows"] == 400


def test_rows_after_truncate_restart_identity_are_in_the_window(conn):
    _baseline_model(conn)
    conn.execute("TRUNCATE training_data RESTART IDENTITY")
    copy_rows(conn, ds.unscored(ds.feature_rows(30, seed=59), M))
    assert ds.refresh(conn)[M]["window_rows"] == 30
    ds.assert_recount(conn, M)


def test_refresh_work_follows_the_window_not_the_table(conn):
    # Buffers a refresh of a changed window touches, with 2,000 and with
    # 40,000 older rows of the model in training_data: about the same.
    def buffers(older_rows: int) -> int:
        conn.execute("TRUNCATE training_data RESTART IDENTITY")
        conn.execute("DELETE FROM drift_baselines")
        _baseline_model(conn, n=older_rows, drift_window=300)
        copy_rows(conn, ds.unscored(ds.feature_rows(400, seed=60), M))
        conn.execute("VACUUM ANALYZE training_data")
        [[plan]] = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM refresh_drift()").fetchone()
        assert ds.baseline_row(conn, M)["recent_rows"] == 300
        top = plan["Plan"]
        return top["Shared Hit Blocks"] + top["Shared Read Blocks"]

    small, large = buffers(2000), buffers(40000)
    assert large <= small * 1.5 + 20, (small, large)
