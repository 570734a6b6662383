-- Frozen: reverts revision 0004_drift_monitor. Never edit.

CREATE OR REPLACE FUNCTION training_data_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    m          record;
    v_policy   retrain_policies;
    v_over     bigint;
    v_row_id   bigint;
    v_ids      bigint[] := '{}';
    v_errors   boolean[] := '{}';
BEGIN
    FOR m IN
        SELECT n.model_name,
               max(n.error_rate) AS max_error_rate,
               count(*) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS scored
        FROM inserted_rows AS n
        GROUP BY n.model_name
        ORDER BY n.model_name   -- a fixed lock order across models
    LOOP
        INSERT INTO retrain_models (model_name) VALUES (m.model_name) ON CONFLICT DO NOTHING;
        v_policy := retrain_policy_for(m.model_name);
        v_over := 0;
        v_row_id := NULL;
        v_ids := '{}';
        v_errors := '{}';

        -- Second pass only when the threshold was crossed: how many rows, and
        -- the one with the highest error_rate.
        IF v_policy.enabled AND m.max_error_rate > v_policy.error_rate_threshold THEN
            SELECT count(*), (array_agg(n.id ORDER BY n.error_rate DESC, n.id))[1]
            INTO v_over, v_row_id
            FROM inserted_rows AS n
            WHERE n.model_name = m.model_name
              AND n.error_rate > v_policy.error_rate_threshold;
        END IF;

        IF m.scored > 0 THEN
            -- Only the newest error_window outcomes can remain in the window.
            SELECT coalesce(array_agg(s.id ORDER BY s.id), '{}'),
                   coalesce(array_agg(s.label <> s.prediction ORDER BY s.id), '{}')
            INTO v_ids, v_errors
            FROM (SELECT n.id, n.label, n.prediction
                  FROM inserted_rows AS n
                  WHERE n.model_name = m.model_name
                    AND n.label IS NOT NULL AND n.prediction IS NOT NULL
                  ORDER BY n.id DESC
                  LIMIT v_policy.error_window) AS s;
        END IF;

        PERFORM retrain_check_training_rows(m.model_name, v_over, m.max_error_rate, v_row_id,
                                    v_ids, v_errors);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION training_data_after_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    m         record;
    v_policy  retrain_policies;
    v_over    bigint;
    v_row_id  bigint;
BEGIN
    FOR m IN
        WITH changed AS (
            SELECT n.id, n.model_name, n.error_rate,
                   (o.label IS NOT NULL AND o.prediction IS NOT NULL) AS was_scored,
                   (n.label IS NOT NULL AND n.prediction IS NOT NULL) AS is_scored,
                   n.label <> n.prediction AS is_error,
                   o.label <> o.prediction AS was_error
            FROM updated_rows AS n
            JOIN old_rows AS o USING (id)
            WHERE n.error_rate IS DISTINCT FROM o.error_rate
               OR n.label IS DISTINCT FROM o.label
               OR n.prediction IS DISTINCT FROM o.prediction
               OR n.model_name IS DISTINCT FROM o.model_name
        )
        SELECT c.model_name,
               max(c.error_rate) AS max_error_rate,
               coalesce(array_agg(c.id ORDER BY c.id)
                        FILTER (WHERE c.is_scored AND NOT c.was_scored), '{}') AS new_ids,
               coalesce(array_agg(c.is_error ORDER BY c.id)
                        FILTER (WHERE c.is_scored AND NOT c.was_scored), '{}') AS new_errors,
               -- Rows scored before: their outcome now (NULL = left the window).
               coalesce(array_agg(c.id ORDER BY c.id)
                        FILTER (WHERE c.was_scored
                                AND c.is_error IS DISTINCT FROM c.was_error), '{}') AS changed_ids,
               coalesce(array_agg(c.is_error ORDER BY c.id)
                        FILTER (WHERE c.was_scored
                                AND c.is_error IS DISTINCT FROM c.was_error), '{}') AS changed_errors
        FROM changed AS c
        GROUP BY c.model_name
        ORDER BY c.model_name
    LOOP
        INSERT INTO retrain_models (model_name) VALUES (m.model_name) ON CONFLICT DO NOTHING;
        v_policy := retrain_policy_for(m.model_name);
        v_over := 0;
        v_row_id := NULL;
        IF v_policy.enabled AND m.max_error_rate > v_policy.error_rate_threshold THEN
            SELECT count(*), (array_agg(n.id ORDER BY n.error_rate DESC, n.id))[1]
            INTO v_over, v_row_id
            FROM updated_rows AS n
            JOIN old_rows AS o USING (id)
            WHERE n.model_name = m.model_name
              AND n.error_rate > v_policy.error_rate_threshold
              AND (n.error_rate IS DISTINCT FROM o.error_rate
                   OR n.label IS DISTINCT FROM o.label
                   OR n.prediction IS DISTINCT FROM o.prediction);
        END IF;
        PERFORM retrain_check_training_rows(m.model_name, v_over, m.max_error_rate, v_row_id,
                                    m.new_ids, m.new_errors, m.changed_ids, m.changed_errors);
    END LOOP;
    RETURN NULL;
END;
$$;

DROP FUNCTION refresh_drift(text);
DROP VIEW feature_drift;
DROP FUNCTION store_drift_baseline(text, text, bigint, bigint, jsonb);
DROP TABLE drift_bins, drift_features, drift_baselines, drift_inbox;
