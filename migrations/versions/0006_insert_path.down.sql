-- Frozen: reverts revision 0006_insert_path. Never edit.

CREATE OR REPLACE FUNCTION retrain_lock_model(p_model_name text)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('pg-retrain/' || p_model_name, 0))
$$;

CREATE OR REPLACE FUNCTION retrain_policy_for(p_model_name text)
RETURNS retrain_policies
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT *
    FROM retrain_policies
    WHERE model_name IN (p_model_name, 'default')
    ORDER BY model_name = p_model_name DESC
    LIMIT 1
$$;

CREATE OR REPLACE FUNCTION retrain_reason_rank(p_reason text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT array_position(
        ARRAY['error_rate', 'performance', 'accuracy_drop', 'drift_and_accuracy',
              'drift', 'schedule', 'manual'],
        p_reason)
$$;

CREATE OR REPLACE FUNCTION retrain_merge_details(p_old jsonb, p_new jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT p_old || coalesce(jsonb_object_agg(
        n.key,
        CASE WHEN p_old ? n.key THEN
            jsonb_build_object(
                'first', p_old -> n.key -> 'first',
                'latest', n.value -> 'latest',
                'count', (p_old -> n.key ->> 'count')::bigint + (n.value ->> 'count')::bigint)
        ELSE n.value END), '{}'::jsonb)
    FROM jsonb_each(p_new) AS n
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

CREATE OR REPLACE FUNCTION training_data_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    m                record;
    v_window_rows    integer;
    v_window_errors  integer;
    v_newest_scored  bigint;
    v_over           bigint;
    v_row_id         bigint;
    v_observed       jsonb;
BEGIN
    FOR m IN
        SELECT a.*, p.enabled, p.error_rate_threshold, p.error_window, p.min_error_rows
        FROM (SELECT n.model_name,
                     max(n.error_rate) AS max_error_rate,
                     count(*) FILTER (WHERE n.label IS NOT NULL
                                        AND n.prediction IS NOT NULL) AS scored,
                     count(*) FILTER (WHERE n.label = n.prediction) AS correct,
                     count(*) AS n_rows, min(n.id) AS lo_id, max(n.id) AS hi_id
              FROM inserted_rows AS n
              GROUP BY n.model_name) AS a
        CROSS JOIN LATERAL (
            SELECT rp.enabled, rp.error_rate_threshold, rp.error_window, rp.min_error_rows
            FROM retrain_policies AS rp
            WHERE rp.model_name IN (a.model_name, 'default')
            ORDER BY rp.model_name = a.model_name DESC
            LIMIT 1) AS p
        ORDER BY a.model_name   -- a fixed lock order across models
    LOOP
        -- Register the model, and tell the drift monitor which rows arrived
        -- (a range when their ids are contiguous, as in any single-writer
        -- load), committed with them.
        WITH registered AS (
            INSERT INTO retrain_models (model_name) VALUES (m.model_name)
            ON CONFLICT DO NOTHING)
        INSERT INTO drift_inbox (model_name, lo_id, hi_id, row_ids, scored, correct)
        SELECT m.model_name, m.lo_id, m.hi_id, NULL, m.scored, m.correct
        WHERE m.hi_id - m.lo_id + 1 = m.n_rows
        UNION ALL
        SELECT m.model_name, NULL, NULL, array_agg(n.id), m.scored, m.correct
        FROM inserted_rows AS n
        WHERE m.hi_id - m.lo_id + 1 <> m.n_rows AND n.model_name = m.model_name
        HAVING count(*) > 0;

        v_window_rows := 0;
        v_window_errors := 0;
        IF m.scored > 0 THEN
            -- The rolling error window (kept even while the policy is
            -- disabled): append the statement's newest outcomes, keep the
            -- newest error_window. One upsert; the model lock first, as in
            -- every trigger path.
            PERFORM retrain_lock_model(m.model_name);
            WITH outcomes AS (
                SELECT n.id, n.label <> n.prediction AS is_error
                FROM inserted_rows AS n
                WHERE n.model_name = m.model_name
                  AND n.label IS NOT NULL AND n.prediction IS NOT NULL
                ORDER BY n.id DESC
                LIMIT m.error_window)
            INSERT INTO retrain_error_windows AS w (model_name, row_ids, is_error)
            SELECT m.model_name, array_agg(o.id ORDER BY o.id), array_agg(o.is_error ORDER BY o.id)
            FROM outcomes AS o
            ON CONFLICT (model_name) DO UPDATE
            SET row_ids = (w.row_ids || excluded.row_ids)[
                    greatest(1, cardinality(w.row_ids) + cardinality(excluded.row_ids)
                                - m.error_window + 1):],
                is_error = (w.is_error || excluded.is_error)[
                    greatest(1, cardinality(w.is_error) + cardinality(excluded.is_error)
                                - m.error_window + 1):]
            RETURNING cardinality(w.is_error),
                      (SELECT count(*) FROM unnest(w.is_error) AS e WHERE e),
                      w.row_ids[cardinality(w.row_ids)]
            INTO v_window_rows, v_window_errors, v_newest_scored;
        END IF;

        CONTINUE WHEN NOT m.enabled;
        v_observed := '{}';
        v_over := 0;
        IF m.max_error_rate > m.error_rate_threshold THEN
            -- Second pass only when the threshold was crossed: how many rows,
            -- and the one with the highest error_rate.
            SELECT count(*), (array_agg(n.id ORDER BY n.error_rate DESC, n.id))[1]
            INTO v_over, v_row_id
            FROM inserted_rows AS n
            WHERE n.model_name = m.model_name AND n.error_rate > m.error_rate_threshold;
            v_observed := jsonb_build_object(
                'error_rate', m.max_error_rate, 'threshold', m.error_rate_threshold,
                'row_id', v_row_id);
        END IF;
        IF v_window_rows >= m.min_error_rows
           AND v_window_errors::double precision / v_window_rows > m.error_rate_threshold THEN
            v_observed := v_observed || jsonb_build_object(
                'rolling_error_rate', v_window_errors::double precision / v_window_rows,
                'window_rows', v_window_rows,
                'threshold', m.error_rate_threshold,
                'newest_row_id', v_newest_scored);
            v_over := greatest(v_over, 1);
        END IF;
        IF v_over > 0 THEN
            PERFORM record_retrain_event(m.model_name,
                                         jsonb_build_object('error_rate', v_observed), v_over);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
