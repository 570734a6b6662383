"""The migrations and sql/schema.sql describe the same schema; downgrade
removes everything the migrations made; revisions replay frozen files."""

from pathlib import Path

import psycopg
import pytest

from tests import drift_support
from worker import migrate
from worker.paths import migrations_dir, sql_dir
from worker.schema_files import apply_frozen_sql, sha256_of

# Each query lists one kind of object in the current schema, as comparable text.
CATALOG_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind, c.relacl::text, pg_get_userbyid(c.relowner)
        FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relname <> 'alembic_version' AND c.relname NOT LIKE 'alembic_version%'""",
    "sequences": """
        SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax,
               s.seqmin, s.seqcache, s.seqcycle
        FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
        WHERE c.relnamespace = current_schema()::regnamespace""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity,
               -- Position among the live columns: a dropped column leaves a
               -- gap in attnum that means nothing.
               (SELECT count(*) FROM pg_attribute b
                WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND b.attnum <= a.attnum
                  AND NOT b.attisdropped)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = current_schema()::regnamespace AND a.attnum > 0
          AND NOT a.attisdropped AND c.relname NOT LIKE 'alembic_version%'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = current_schema()::regnamespace
          AND conrelid <> 'alembic_version'::regclass""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes
        WHERE schemaname = current_schema() AND tablename <> 'alembic_version'""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid),
               p.prosecdef, p.proconfig::text, p.proacl::text
        FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace""",
    "triggers": """
        SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal""",
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = current_schema()""",
    "types": """
        SELECT t.typname, t.typtype FROM pg_type t
        WHERE t.typnamespace = current_schema()::regnamespace
          AND t.typname NOT IN ('alembic_version', '_alembic_version')""",
    "policies": """
        SELECT * FROM (SELECT to_jsonb(p) - 'updated_at' AS policy FROM retrain_policies p) s
        WHERE to_regclass('retrain_policies') IS NOT NULL""",
}


def snapshot(url: str) -> dict[str, list]:
    with psycopg.connect(url, autocommit=True) as conn:
        result = {}
        for kind, query in CATALOG_QUERIES.items():
            if kind == "policies" and conn.execute(
                "SELECT to_regclass('retrain_policies')"
            ).fetchone()[0] is None:
                result[kind] = []
                continue
            if kind == "constraints" and conn.execute(
                "SELECT to_regclass('alembic_version')"
            ).fetchone()[0] is None:
                query = query.replace("AND conrelid <> 'alembic_version'::regclass", "")
            result[kind] = sorted(map(repr, conn.execute(query).fetchall()))
        return result


def apply_schema_file(url: str) -> None:
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SELECT set_config('search_path', 'public, pg_temp', false)")
        conn.execute((sql_dir() / "schema.sql").read_text())


def test_schema_file_and_replayed_migrations_agree(server_url, empty_db_url, db_url):
    # db_url is at migration head; empty_db_url gets sql/schema.sql.
    apply_schema_file(empty_db_url)
    migrated, from_file = snapshot(db_url), snapshot(empty_db_url)
    for kind in CATALOG_QUERIES:
        assert migrated[kind] == from_file[kind], f"{kind} differ between migrations and sql/"
    assert migrated["functions"] and migrated["triggers"] and migrated["views"]


def test_downgrade_base_removes_everything_and_upgrade_works_again(empty_db_url):
    nothing = snapshot(empty_db_url)
    migrate.upgrade(empty_db_url)
    at_head = snapshot(empty_db_url)
    assert at_head["relations"] and at_head["functions"]

    migrate.downgrade(empty_db_url, "base")
    after = snapshot(empty_db_url)
    assert after == nothing
    with psycopg.connect(empty_db_url) as conn:
        tables = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relkind = 'r'"
        ).fetchall()
    assert tables == [("alembic_version",)]

    migrate.upgrade(empty_db_url)
    assert snapshot(empty_db_url) == at_head


def _privileges(url: str) -> list:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT c.relname, c.relacl::text FROM pg_class c "
            "WHERE c.relnamespace = current_schema()::regnamespace "
            "AND c.relname NOT LIKE 'alembic_version%' "
            "UNION ALL SELECT p.oid::regprocedure::text, p.proacl::text FROM pg_proc p "
            "WHERE p.pronamespace = current_schema()::regnamespace ORDER BY 1").fetchall()


def test_upgrading_after_roles_sql_grants_what_a_fresh_install_does(db_url, empty_db_url):
    # Fresh: the schema at head, then sql/roles.sql. Upgraded: roles.sql ran
    # at revision 0011, before the window and drift tables of 0012 existed.
    roles = (sql_dir() / "roles.sql").read_text()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(roles)
    migrate.upgrade(empty_db_url, "0011_cheaper_insert_path")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(roles)
    migrate.upgrade(empty_db_url)
    fresh, upgraded = _privileges(db_url), _privileges(empty_db_url)
    assert any("pgretrain_worker" in (acl or "") for _, acl in fresh)
    assert upgraded == fresh


def test_every_revision_applies_frozen_files_whose_hash_it_pins():
    versions = migrations_dir() / "versions"
    revisions = sorted(versions.glob("*.py"))
    assert revisions
    for revision in revisions:
        text = revision.read_text()
        for sql_file in sorted(versions.glob(revision.stem + ".*.sql")):
            assert sha256_of(sql_file) in text, f"{revision.name} does not pin {sql_file.name}"


def test_an_edited_frozen_file_stops_the_migration(tmp_path):
    frozen = tmp_path / "0001_x.up.sql"
    frozen.write_text("SELECT 1;")
    digest = sha256_of(frozen)
    frozen.write_text("SELECT 2;")
    with pytest.raises(RuntimeError, match="edited after its revision"):
        apply_frozen_sql(op=None, path=frozen, sha256=digest)


def test_upgrading_keeps_each_models_error_window_and_privileges(empty_db_url):
    # Revision 0011 replaced the kept error windows (retrain_error_windows)
    # by reading training_data above the last successful retrain's
    # error_window_after, rebuilt drift_inbox without its id, and moved the
    # events' status and reason checks into domains.
    migrate.upgrade(empty_db_url, "0010_one_running_bounds")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute((sql_dir() / "roles.sql").read_text())

        def scored(model, wrong):
            return conn.execute(
                "INSERT INTO training_data (model_name, features, label, prediction) "
                "SELECT %s, '{}', 'a', CASE WHEN w THEN 'b' ELSE 'a' END "
                "FROM unnest(%s::boolean[]) AS w RETURNING id", (model, wrong)).fetchall()

        before_retrain = scored("kept", [False] * 3)
        conn.execute(
            "INSERT INTO retrain_events (model_name, reason, reasons, status) "
            "VALUES ('kept', 'manual', '{manual}', 'running'), "
            "('retrained', 'manual', '{manual}', 'running')")
        scored("retrained", [True] * 3)
        conn.execute("UPDATE retrain_events SET status = 'succeeded', finished_at = now()")
        after_retrain = scored("kept", [True] * 2)
        scored("never", [True])
        newest = conn.execute("SELECT max(id) FROM training_data").fetchone()[0]

    migrate.upgrade(empty_db_url, "0011_cheaper_insert_path")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        starts = dict(conn.execute(
            "SELECT model_name, error_window_after FROM retrain_events "
            "WHERE status = 'succeeded'").fetchall())
        assert conn.execute(
            "SELECT count(*) FROM retrain_events WHERE status = 'succeeded' "
            "AND reason = 'manual'").fetchone()[0] == 2
        # The worker keeps what sql/roles.sql granted it.
        for table in ("drift_inbox", "model_status", "retrain_models"):
            assert conn.execute(
                "SELECT has_table_privilege('pgretrain_worker', %s, 'SELECT')",
                (table,)).fetchone()[0], table
        assert conn.execute(
            "SELECT has_table_privilege('pgretrain_worker', 'drift_inbox', 'DELETE')"
        ).fetchone()[0]
    # kept: its window held the two rows scored after the retrain.
    assert starts["kept"] == after_retrain[0][0] - 1
    assert starts["kept"] > before_retrain[-1][0]
    # retrained: no window kept, so nothing scored since: after every row.
    assert starts["retrained"] == newest

    migrate.downgrade(empty_db_url, "0010_one_running_bounds")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        windows = dict(conn.execute(
            "SELECT model_name, cardinality(row_ids) FROM retrain_error_windows").fetchall())
        assert windows == {"kept": 2, "never": 1}
        assert conn.execute(
            "SELECT has_table_privilege('pgretrain_worker', 'retrain_error_windows', 'DELETE')"
        ).fetchone()[0]
        assert conn.execute(
            "SELECT count(*) FROM retrain_events WHERE status = 'succeeded'").fetchone()[0] == 2


def test_upgrading_to_the_drift_horizon_counts_every_row_once(empty_db_url):
    # Before revision 0012 the insert path recorded arrivals in drift_inbox;
    # the upgrade counts what it still holds, then counts by id from there.
    migrate.upgrade(empty_db_url, "0011_cheaper_insert_path")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute((sql_dir() / "roles.sql").read_text())
        drift_support.store_baseline(conn, "m", drift_support.feature_rows(500, seed=1))
        before = drift_support.feature_rows(300, seed=2)
        drift_support.insert_values(conn, drift_support.unscored(before, "m"))
        assert drift_support.baseline_row(conn, "m")["recent_rows"] == 0  # not refreshed yet

    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert drift_support.baseline_row(conn, "m")["recent_rows"] == 300
        assert conn.execute("SELECT to_regclass('drift_inbox')").fetchone()[0] is None
        for table in ("drift_horizon", "drift_writers", "drift_label_changes"):
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert conn.execute("SELECT has_table_privilege('pgretrain_worker', %s, %s)",
                                    (table, privilege)).fetchone()[0], (table, privilege)
        after = drift_support.feature_rows(50, seed=3)
        drift_support.insert_values(conn, drift_support.unscored(after, "m"))
        drift_support.refresh(conn)
        drift_support.assert_recount(conn, "m", before + after)

    # And back: everything counted first, then the arrival records again.
    migrate.downgrade(empty_db_url, "0011_cheaper_insert_path")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        more = drift_support.feature_rows(20, seed=4)
        drift_support.insert_values(conn, drift_support.unscored(more, "m"))
        drift_support.refresh(conn)
        drift_support.assert_recount(conn, "m", before + after + more)
        assert conn.execute(
            "SELECT has_table_privilege('pgretrain_worker', 'drift_inbox', 'DELETE')"
        ).fetchone()[0]


def test_late_rows_keep_counting_across_the_upgrade_and_back(empty_db_url):
    # At 0011 a row committed after its baseline with a lower id is a late
    # row; from 0012 it is a gap of the baseline's before_ids. Labels that
    # reach such rows count, and labels of rows from before the baseline do
    # not, on either side.
    migrate.upgrade(empty_db_url, "0011_cheaper_insert_path")
    base_rows = drift_support.feature_rows(300, seed=11)
    with psycopg.connect(empty_db_url, autocommit=True) as conn, \
            psycopg.connect(empty_db_url) as late:
        drift_support.insert_values(conn, drift_support.unscored(base_rows, "m"))
        late_ids = drift_support.insert_values(
            late, drift_support.scored(drift_support.feature_rows(4, seed=12), "m", label=False))
        drift_support.insert_values(conn, drift_support.unscored(
            drift_support.feature_rows(2, seed=13), "m"))
        drift_support.store_baseline(conn, "m", base_rows)
        late.commit()
        drift_support.refresh(conn)
        before_id = conn.execute("SELECT min(id) FROM training_data").fetchone()[0]

    def label(conn, ids):
        conn.execute("UPDATE training_data SET label = prediction WHERE id = ANY (%s)", (ids,))

    def labelled(conn):
        drift_support.refresh(conn)
        return drift_support.baseline_row(conn, "m")["labelled_rows"]

    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert drift_support.baseline_row(conn, "m")["recent_rows"] == 4
        label(conn, late_ids[:2] + [before_id])
        assert labelled(conn) == 2

    migrate.downgrade(empty_db_url, "0011_cheaper_insert_path")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        label(conn, late_ids[2:3])
        assert labelled(conn) == 3

    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        label(conn, late_ids[3:])
        assert labelled(conn) == 4


def test_upgrading_restarts_windows_a_truncate_left_behind(empty_db_url):
    # Before revision 0013 a TRUNCATE ... RESTART IDENTITY left each model's
    # window after ids from before it.
    from tests.helpers import finish_retrain, insert_scored

    migrate.upgrade(empty_db_url, "0012_insert_path_writes_nothing")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        insert_scored(conn, "stuck", [False] * 20)
        finish_retrain(conn, "stuck")  # after id 20
        conn.execute("TRUNCATE training_data RESTART IDENTITY")
        insert_scored(conn, "stuck", [False] * 3)  # ids 1-3
        finish_retrain(conn, "passed")  # after id 3, which the sequence has reached
        # Rows stamped with a clock ahead, and no TRUNCATE: nothing to repair.
        conn.execute("INSERT INTO training_data (model_name, features, created_at) "
                     "VALUES ('ahead', '{}', now() + interval '10 minutes')")
        finish_retrain(conn, "ahead")  # after id 4
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        starts = dict(conn.execute(
            "SELECT model_name, error_window_after FROM retrain_events").fetchall())
    assert starts == {"stuck": 0, "passed": 3, "ahead": 4}


def test_upgrading_restarts_a_window_left_behind_with_no_rows(empty_db_url):
    from tests.helpers import finish_retrain, insert_scored

    migrate.upgrade(empty_db_url, "0012_insert_path_writes_nothing")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        insert_scored(conn, "emptied", [False] * 20)
        finish_retrain(conn, "emptied")  # after id 20
        conn.execute("TRUNCATE training_data RESTART IDENTITY")
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT error_window_after FROM retrain_events").fetchall() == [(0,)]
        insert_scored(conn, "emptied", [False] * 4 + [True])  # ids 1-5: 1/5 with 5 rows
        # The default policy needs 50 rows: the window holds them, nothing fires yet.
        assert conn.execute(
            "SELECT count(*) FROM retrain_events WHERE status = 'pending'").fetchone()[0] == 0
