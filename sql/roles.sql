-- pg-retrain roles: run once per database, after `worker migrate`, as a role
-- that may create roles and owns the schema:
--
--     psql "$DATABASE_URL" -f sql/roles.sql
--
-- Then grant the group roles to your login roles:
--
--     CREATE ROLE etl_loader LOGIN PASSWORD '...' IN ROLE pgretrain_etl;
--     CREATE ROLE retrain_worker LOGIN PASSWORD '...' IN ROLE pgretrain_worker;
--
-- pgretrain_etl writes training_data and model_metrics and nothing else:
-- the triggers it fires run as the schema owner (SECURITY DEFINER), so every
-- check is made and every event recorded, while the role can neither read
-- nor write retrain_events or retrain_policies.
--
-- pgretrain_worker runs `worker listen`/`run-once`: reads the data, claims
-- and finishes events, writes metrics and policies.
--
-- Roles are cluster-wide; the grants are per database. Safe to run again.

DO $$
DECLARE
    v_schema text := current_schema();
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgretrain_etl') THEN
        CREATE ROLE pgretrain_etl NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgretrain_worker') THEN
        CREATE ROLE pgretrain_worker NOLOGIN;
    END IF;

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgretrain_etl, pgretrain_worker', v_schema);

    -- UPDATE needs SELECT to find its rows (WHERE id = ...), and a label that
    -- arrives later comes by UPDATE.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.training_data, %I.model_metrics '
                   'TO pgretrain_etl', v_schema, v_schema);

    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I '
                   'TO pgretrain_worker', v_schema);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.request_retrain(text, text), '
                   '%I.check_retrain_schedules() TO pgretrain_worker', v_schema, v_schema);
END;
$$;
