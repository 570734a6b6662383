"""An ETL role that may only write training_data and model_metrics fires
every check, yet cannot touch the queue or the policies."""

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from worker.paths import sql_dir
from tests.helpers import events


@pytest.fixture
def etl_conn(conn, db_url):
    conn.execute((sql_dir() / "roles.sql").read_text())
    role = f"etl_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgretrain_etl").format(sql.Identifier(role)))
    url = make_url(db_url).set(username=role, password=None).render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as etl:
        yield etl
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_etl_role_fires_checks_through_insert_update_and_copy(conn, etl_conn):
    etl_conn.execute(
        "INSERT INTO training_data (model_name, features, error_rate) VALUES ('m', %s, 0.5)",
        (Jsonb({"a": 1}),),
    )
    with etl_conn.cursor() as cur, cur.copy(
        "COPY training_data (model_name, features, error_rate) FROM STDIN"
    ) as copy:
        copy.write_row(("copied", '{"a": 2}', 0.9))
    etl_conn.execute("UPDATE training_data SET error_rate = 0.7 WHERE model_name = 'm'")
    etl_conn.execute("INSERT INTO model_metrics (model_name, accuracy) VALUES ('metric', 0.5)")

    by_model = {e["model_name"]: e for e in events(conn)}
    assert by_model["m"]["reason"] == "error_rate"
    assert by_model["m"]["details"]["error_rate"]["count"] == 2  # insert, then update
    assert by_model["copied"]["reason"] == "error_rate"
    assert by_model["metric"]["reason"] == "performance"


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM retrain_events",
        "INSERT INTO retrain_events (model_name, reason, reasons) VALUES ('m', 'manual', '{manual}')",
        "UPDATE retrain_events SET status = 'cancelled'",
        "SELECT * FROM retrain_policies",
        "UPDATE retrain_policies SET enabled = false",
        "SELECT request_retrain('m')",
        "SELECT check_retrain_schedules()",
        "SELECT record_retrain_event('m', '{\"manual\": {}}'::jsonb)",
        "DELETE FROM training_data",
        "SELECT * FROM model_status",
        "UPDATE drift_baselines SET after_row_id = 0",
        "SELECT * FROM refresh_drift()",
    ],
)
def test_etl_role_cannot_reach_the_queue_or_policies(conn, etl_conn, statement):
    etl_conn.execute("INSERT INTO training_data (model_name, features) VALUES ('m', '{}')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        etl_conn.execute(statement)


def test_trigger_functions_are_security_definer_with_a_fixed_search_path(conn):
    rows = conn.execute(
        "SELECT p.proname, p.prosecdef, p.proconfig FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema() AND p.prokind = 'f'"
    ).fetchall()
    assert rows
    # SQL helpers go without, so that they are inlined: they touch no table,
    # or run as the caller and are called from functions that pin it.
    inlined = {"retrain_lock_model",
               "drift_bin", "retrain_policy_for", "retrain_champion"}
    for name, secdef, config in rows:
        if name in inlined:
            assert not secdef and not config, name
            continue
        # Every other function pins its search_path, pg_temp last.
        assert config and any(c.startswith("search_path=") and c.endswith("pg_temp") for c in config), name
    definers = {name for name, secdef, _ in rows if secdef}
    assert definers == {
        "training_data_after_insert", "training_data_after_update",
        "training_data_after_truncate", "model_metrics_after_write", "request_retrain",
        "check_retrain_schedules",
    }
