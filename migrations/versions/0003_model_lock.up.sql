-- Frozen: applied by revision 0003_model_lock. Never edit; change sql/schema.sql
-- and add a revision instead.

-- Every trigger path takes its model's lock before any other per-model row
-- (the pending event, the error window), so concurrent writers of one model
-- queue instead of deadlocking. Held to the end of the transaction, and only
-- by writers that fire something or score rows.
CREATE FUNCTION retrain_lock_model(p_model_name text)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('pg-retrain/' || p_model_name, 0))
$$;

CREATE OR REPLACE FUNCTION record_retrain_event(
    p_model_name text,
    p_observed jsonb,
    p_firings bigint DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_reasons    text[];
    v_details    jsonb;
    v_manual     boolean;
    v_cooldown   interval;
    v_last_end   timestamptz;
    v_run_after  timestamptz := now();
    v_id         bigint;
    v_all        text[];
BEGIN
    PERFORM retrain_lock_model(p_model_name);

    SELECT array_agg(key ORDER BY retrain_reason_rank(key)),
           jsonb_object_agg(key, jsonb_build_object(
               'first', value, 'latest', value, 'count', p_firings))
    INTO v_reasons, v_details
    FROM jsonb_each(p_observed);

    IF v_reasons IS NULL THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT FROM unnest(v_reasons) r WHERE retrain_reason_rank(r) IS NULL) THEN
        RAISE EXCEPTION 'unknown retrain reason in %', v_reasons
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_manual := 'manual' = ANY (v_reasons);

    -- Cooldown: defer after the model's last finished retrain. A manual
    -- request skips it.
    IF NOT v_manual THEN
        v_cooldown := (retrain_policy_for(p_model_name)).cooldown;
        SELECT max(finished_at) INTO v_last_end
        FROM retrain_events
        WHERE model_name = p_model_name AND status IN ('succeeded', 'failed');
        IF v_last_end + v_cooldown > now() THEN
            v_run_after := v_last_end + v_cooldown;
        END IF;
    END IF;

    INSERT INTO retrain_events AS e (model_name, reason, reasons, details, run_after)
    VALUES (p_model_name, v_reasons[1], v_reasons, v_details, v_run_after)
    ON CONFLICT (model_name) WHERE status = 'pending' DO UPDATE
    SET reasons = e.reasons || ARRAY(
            SELECT r FROM unnest(excluded.reasons) WITH ORDINALITY AS u(r, i)
            WHERE r <> ALL (e.reasons) ORDER BY i),
        details = retrain_merge_details(e.details, excluded.details),
        -- Extending keeps run_after, except that a manual request is due now.
        run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
    RETURNING e.id, e.reasons INTO v_id, v_all;

    INSERT INTO retrain_models (model_name) VALUES (p_model_name) ON CONFLICT DO NOTHING;

    PERFORM pg_notify('retrain_events', json_build_object(
        'id', v_id, 'model_name', p_model_name, 'reasons', v_all)::text);
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION retrain_advance_error_window(
    p_model_name text,
    p_window integer,
    p_new_ids bigint[],
    p_new_errors boolean[],
    p_changed_ids bigint[] DEFAULT '{}',
    p_changed_errors boolean[] DEFAULT '{}',
    OUT window_rows integer,
    OUT window_errors integer)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_ids     bigint[];
    v_errors  boolean[];
    v_len     integer;
BEGIN
    PERFORM retrain_lock_model(p_model_name);

    SELECT w.row_ids, w.is_error INTO v_ids, v_errors
    FROM retrain_error_windows AS w
    WHERE w.model_name = p_model_name
    FOR UPDATE;

    v_ids := coalesce(v_ids, '{}');
    v_errors := coalesce(v_errors, '{}');

    -- Rows already in the window whose outcome changed by UPDATE: a NULL
    -- outcome means the row is no longer scored and leaves the window.
    IF cardinality(p_changed_ids) > 0 AND cardinality(v_ids) > 0 THEN
        SELECT coalesce(array_agg(w.id ORDER BY w.i), '{}'),
               coalesce(array_agg(coalesce(c.err, w.err) ORDER BY w.i), '{}')
        INTO v_ids, v_errors
        FROM unnest(v_ids, v_errors) WITH ORDINALITY AS w(id, err, i)
        LEFT JOIN unnest(p_changed_ids, p_changed_errors) AS c(id, err) ON c.id = w.id
        WHERE NOT (c.id IS NOT NULL AND c.err IS NULL);
    END IF;

    v_ids := v_ids || p_new_ids;
    v_errors := v_errors || p_new_errors;
    v_len := cardinality(v_ids);
    IF v_len > p_window THEN
        v_ids := v_ids[v_len - p_window + 1:];
        v_errors := v_errors[v_len - p_window + 1:];
    END IF;

    INSERT INTO retrain_error_windows AS w (model_name, row_ids, is_error)
    VALUES (p_model_name, v_ids, v_errors)
    ON CONFLICT (model_name) DO UPDATE
    SET row_ids = excluded.row_ids, is_error = excluded.is_error;

    window_rows := cardinality(v_ids);
    SELECT count(*) FILTER (WHERE e) INTO window_errors FROM unnest(v_errors) AS e;
END;
$$;
