"""The migrations and sql/schema.sql describe the same schema; downgrade
removes everything the migrations made; revisions replay frozen files."""

from pathlib import Path

import psycopg
import pytest

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
