-- Frozen: reverts revision 0007_insert_path_jit. Never edit.

CREATE OR REPLACE FUNCTION training_data_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    m           record;
    v_over      bigint;
    v_row_id    bigint;
    v_observed  jsonb;
BEGIN
    -- One statement does the common path for every model in the statement:
    -- register the model, tell the drift monitor which rows arrived, advance
    -- the rolling error window; it returns only the models for which
    -- something fired. (Single-row INSERTs pay this per row: each extra
    -- statement or helper call here is measured in bench/insert_overhead.py.)
    FOR m IN
        WITH arrived AS (
            SELECT n.model_name,
                   max(n.error_rate) AS max_error_rate,
                   count(*) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS scored,
                   count(*) FILTER (WHERE n.label = n.prediction) AS correct,
                   count(*) AS n_rows, min(n.id) AS lo_id, max(n.id) AS hi_id
            FROM inserted_rows AS n
            GROUP BY n.model_name),
        policy AS (
            SELECT a.*, p.enabled, p.error_rate_threshold, p.error_window, p.min_error_rows
            FROM arrived AS a
            CROSS JOIN LATERAL (
                SELECT rp.enabled, rp.error_rate_threshold, rp.error_window, rp.min_error_rows
                FROM retrain_policies AS rp
                WHERE rp.model_name IN (a.model_name, 'default')
                ORDER BY rp.model_name = a.model_name DESC
                LIMIT 1) AS p),
        registered AS (
            INSERT INTO retrain_models (model_name)
            SELECT a.model_name FROM arrived AS a
            WHERE NOT EXISTS (SELECT FROM retrain_models AS r WHERE r.model_name = a.model_name)
            ON CONFLICT DO NOTHING),
        -- Arrivals for the drift monitor, committed with the rows: a range
        -- when the ids are contiguous (any single-writer load), else the ids.
        inbox AS (
            INSERT INTO drift_inbox (model_name, lo_id, hi_id, row_ids, scored, correct)
            SELECT a.model_name, a.lo_id, a.hi_id, NULL, a.scored, a.correct
            FROM arrived AS a WHERE a.hi_id - a.lo_id + 1 = a.n_rows
            UNION ALL
            SELECT a.model_name, NULL, NULL,
                   ARRAY(SELECT n.id FROM inserted_rows AS n WHERE n.model_name = a.model_name),
                   a.scored, a.correct
            FROM arrived AS a WHERE a.hi_id - a.lo_id + 1 <> a.n_rows),
        -- The rolling error window (kept even while the policy is disabled):
        -- append the statement's newest outcomes, keep the newest
        -- error_window. The model lock is taken first, as in every trigger
        -- path, so writers of one model queue instead of deadlocking.
        windowed AS (
            INSERT INTO retrain_error_windows AS w (model_name, row_ids, is_error)
            SELECT p.model_name, o.ids, o.errs
            FROM policy AS p
            CROSS JOIN LATERAL (
                SELECT array_agg(s.id ORDER BY s.id) AS ids,
                       array_agg(s.is_error ORDER BY s.id) AS errs,
                       pg_advisory_xact_lock(hashtextextended('pg-retrain/' || p.model_name, 0)) AS locked
                FROM (SELECT n.id, n.label <> n.prediction AS is_error
                      FROM inserted_rows AS n
                      WHERE n.model_name = p.model_name
                        AND n.label IS NOT NULL AND n.prediction IS NOT NULL
                      ORDER BY n.id DESC
                      LIMIT p.error_window) AS s) AS o
            WHERE p.scored > 0
            ORDER BY p.model_name
            ON CONFLICT (model_name) DO UPDATE
            SET row_ids = (w.row_ids || excluded.row_ids)[
                    greatest(1, cardinality(w.row_ids) + cardinality(excluded.row_ids)
                                - (SELECT p2.error_window FROM policy AS p2
                                   WHERE p2.model_name = excluded.model_name) + 1):],
                is_error = (w.is_error || excluded.is_error)[
                    greatest(1, cardinality(w.is_error) + cardinality(excluded.is_error)
                                - (SELECT p2.error_window FROM policy AS p2
                                   WHERE p2.model_name = excluded.model_name) + 1):]
            RETURNING w.model_name, cardinality(w.is_error) AS window_rows,
                      cardinality(array_positions(w.is_error, true)) AS window_errors,
                      w.row_ids[cardinality(w.row_ids)] AS newest_scored)
        SELECT p.*, coalesce(w.window_rows, 0) AS window_rows,
               coalesce(w.window_errors, 0) AS window_errors, w.newest_scored
        FROM policy AS p
        LEFT JOIN windowed AS w USING (model_name)
        WHERE p.enabled
          AND (p.max_error_rate > p.error_rate_threshold
               OR (w.window_rows >= p.min_error_rows
                   AND w.window_errors::double precision / w.window_rows > p.error_rate_threshold))
        ORDER BY p.model_name
    LOOP
        v_observed := '{}';
        v_over := 0;
        IF m.max_error_rate > m.error_rate_threshold THEN
            -- How many rows, and the first with the highest error_rate.
            SELECT count(*), min(n.id) FILTER (WHERE n.error_rate = m.max_error_rate)
            INTO v_over, v_row_id
            FROM inserted_rows AS n
            WHERE n.model_name = m.model_name AND n.error_rate > m.error_rate_threshold;
            v_observed := jsonb_build_object(
                'error_rate', m.max_error_rate, 'threshold', m.error_rate_threshold,
                'row_id', v_row_id);
        END IF;
        IF m.window_rows >= m.min_error_rows
           AND m.window_errors::double precision / m.window_rows > m.error_rate_threshold THEN
            v_observed := v_observed || jsonb_build_object(
                'rolling_error_rate', m.window_errors::double precision / m.window_rows,
                'window_rows', m.window_rows,
                'threshold', m.error_rate_threshold,
                'newest_row_id', m.newest_scored);
            v_over := greatest(v_over, 1);
        END IF;
        PERFORM record_retrain_event(m.model_name,
                                     jsonb_build_object('error_rate', v_observed), v_over);
    END LOOP;
    RETURN NULL;
END;
$$;

ALTER FUNCTION training_data_after_update() RESET jit;
