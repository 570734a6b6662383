-- Frozen: reverts revision 0009_late_rows. Never edit.

CREATE OR REPLACE FUNCTION refresh_drift(p_model_name text DEFAULT NULL)
RETURNS TABLE (model_name text, new_rows bigint, drift_score double precision,
               accuracy double precision, reported boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- Generic plans price the id ranges by the table's size; JIT would then make
-- the refresh slower on a large table for the same rows.
SET jit = off
AS $$
DECLARE
    m              record;
    v_entries      bigint;
    v_scored       bigint;
    v_correct      bigint;
    v_lo           bigint[];
    v_hi           bigint[];
    v_ids          bigint[];
    v_unseen       text[];
    v_unseen_rows  bigint[];
    v_totals       drift_baselines;
BEGIN
    -- Rows of models without a baseline are not "since the baseline".
    DELETE FROM drift_inbox AS i
    WHERE (p_model_name IS NULL OR i.model_name = p_model_name)
      AND NOT EXISTS (SELECT FROM drift_baselines AS d WHERE d.model_name = i.model_name);

    FOR m IN
        SELECT d.model_name FROM drift_baselines AS d
        WHERE p_model_name IS NULL OR d.model_name = p_model_name
        ORDER BY d.model_name
    LOOP
        -- One refresher per model at a time; the others then find nothing.
        PERFORM FROM drift_baselines AS d WHERE d.model_name = m.model_name FOR UPDATE;

        WITH taken AS (
            DELETE FROM drift_inbox AS i WHERE i.model_name = m.model_name
            RETURNING i.lo_id, i.hi_id, i.row_ids, i.scored, i.correct)
        SELECT (SELECT count(*) FROM taken),
               (SELECT coalesce(sum(t.scored), 0) FROM taken AS t),
               (SELECT coalesce(sum(t.correct), 0) FROM taken AS t),
               (SELECT coalesce(array_agg(t.lo_id), '{}') FROM taken AS t WHERE t.lo_id IS NOT NULL),
               (SELECT coalesce(array_agg(t.hi_id), '{}') FROM taken AS t WHERE t.lo_id IS NOT NULL),
               (SELECT coalesce(array_agg(u.id), '{}') FROM taken AS t, unnest(t.row_ids) AS u(id))
        INTO v_entries, v_scored, v_correct, v_lo, v_hi, v_ids;
        CONTINUE WHEN v_entries = 0;

        WITH arrived AS MATERIALIZED (
            SELECT t.features
            FROM unnest(v_lo, v_hi) AS r(lo, hi)
            JOIN training_data AS t ON t.id BETWEEN r.lo AND r.hi
            WHERE t.model_name = m.model_name
            UNION ALL
            SELECT t.features
            FROM unnest(v_ids) AS u(id)
            JOIN training_data AS t ON t.id = u.id
            WHERE t.model_name = m.model_name),
        binned AS (
            SELECT f.feature,
                   CASE
                       WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN -1
                       WHEN f.kind = 'numeric' THEN
                           -- Through numeric: jsonb holds numbers (1e400,
                           -- 1e-400) that double precision cannot.
                           CASE WHEN jsonb_typeof(v) <> 'number' THEN -1
                                WHEN v::numeric > 1e308 THEN cardinality(f.edges)
                                WHEN v::numeric < -1e308 THEN 0
                                WHEN abs(v::numeric) < 1e-300 THEN width_bucket(0::double precision, f.edges)
                                ELSE width_bucket(v::numeric::double precision, f.edges) END
                       ELSE coalesce(array_position(f.categories, v #>> '{}'), 0)
                   END AS bin
            FROM arrived AS a
            CROSS JOIN drift_features AS f
            CROSS JOIN LATERAL (SELECT a.features -> f.feature AS v) AS x
            WHERE f.model_name = m.model_name AND f.kind <> 'unseen'),
        counted AS (
            UPDATE drift_bins AS b
            SET recent_count = b.recent_count + c.n
            FROM (SELECT feature, bin, count(*) AS n FROM binned GROUP BY feature, bin) AS c
            WHERE b.model_name = m.model_name AND b.feature = c.feature AND b.bin = c.bin
            RETURNING 1),
        unseen AS (
            SELECT k.key, count(*) AS n
            FROM arrived AS a, jsonb_object_keys(a.features) AS k(key)
            WHERE NOT EXISTS (SELECT FROM drift_features AS f
                              WHERE f.model_name = m.model_name AND f.feature = k.key
                                AND f.kind <> 'unseen')
            GROUP BY k.key)
        SELECT (SELECT count(*) FROM arrived),
               (SELECT coalesce(array_agg(u.key), '{}') FROM unseen AS u),
               (SELECT coalesce(array_agg(u.n), '{}') FROM unseen AS u)
        INTO new_rows, v_unseen, v_unseen_rows
        FROM (SELECT count(*) FROM counted) AS force_update;

        -- Features that appeared after the baseline: reported, not scored.
        INSERT INTO drift_features (model_name, feature, kind)
        SELECT m.model_name, u, 'unseen' FROM unnest(v_unseen) AS u
        ON CONFLICT DO NOTHING;
        INSERT INTO drift_bins AS b (model_name, feature, bin, label, baseline_share, recent_count)
        SELECT m.model_name, u.key, 1, 'present', 0, u.n
        FROM unnest(v_unseen, v_unseen_rows) AS u(key, n)
        ON CONFLICT ON CONSTRAINT drift_bins_pkey
        DO UPDATE SET recent_count = b.recent_count + excluded.recent_count;

        UPDATE drift_baselines AS d
        SET recent_rows = d.recent_rows + new_rows,
            labelled_rows = d.labelled_rows + v_scored,
            correct_rows = d.correct_rows + v_correct,
            refreshed_at = now()
        WHERE d.model_name = m.model_name
        RETURNING * INTO v_totals;

        model_name := m.model_name;
        SELECT max(fd.psi) INTO drift_score
        FROM feature_drift AS fd WHERE fd.model_name = m.model_name;
        accuracy := CASE WHEN v_totals.labelled_rows > 0 THEN
                        greatest(0, least(1, v_totals.correct_rows::double precision
                                             / v_totals.labelled_rows)) END;
        -- New rows, or labels that arrived for rows since the baseline: the
        -- monitor's accuracy changed either way.
        reported := (new_rows > 0 OR v_scored <> 0 OR v_correct <> 0)
                    AND v_totals.recent_rows >= (retrain_policy_for(m.model_name)).drift_min_rows;
        IF reported THEN
            INSERT INTO model_metrics (model_name, model_version, accuracy, drift_score, source)
            VALUES (m.model_name, v_totals.model_version, accuracy, drift_score, 'monitor');
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION training_data_after_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
SET jit = off
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
                   o.label <> o.prediction AS was_error,
                   n.id > (SELECT d.max_row_id FROM drift_baselines AS d
                           WHERE d.model_name = n.model_name) AS since_baseline
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
                                AND c.is_error IS DISTINCT FROM c.was_error), '{}') AS changed_errors,
               -- For the drift monitor's accuracy: labelled and correct rows
               -- gained or lost since the baseline.
               coalesce(sum(c.is_scored::int - c.was_scored::int)
                        FILTER (WHERE c.since_baseline), 0) AS scored_delta,
               coalesce(sum((c.is_scored AND NOT c.is_error)::int
                            - (c.was_scored AND NOT c.was_error)::int)
                        FILTER (WHERE c.since_baseline), 0) AS correct_delta
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
        IF m.scored_delta <> 0 OR m.correct_delta <> 0 THEN
            INSERT INTO drift_inbox (model_name, scored, correct)
            VALUES (m.model_name, m.scored_delta, m.correct_delta);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

DROP TABLE drift_late_rows;

CREATE OR REPLACE FUNCTION training_data_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
-- The planner prices a 200k-row transition table high enough to JIT-compile
-- this statement, which costs far more than it saves on a write path.
SET jit = off
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
                FROM (-- All rows scored, ids contiguous (a single-writer load):
                      -- the newest are the top of the id range, read by key.
                      SELECT t.id, t.label <> t.prediction AS is_error
                      FROM training_data AS t
                      WHERE p.scored = p.n_rows AND p.hi_id - p.lo_id + 1 = p.n_rows
                        AND t.id BETWEEN greatest(p.lo_id, p.hi_id - p.error_window + 1)
                                     AND p.hi_id
                      UNION ALL
                      (SELECT n.id, n.label <> n.prediction AS is_error
                       FROM inserted_rows AS n
                       WHERE NOT (p.scored = p.n_rows AND p.hi_id - p.lo_id + 1 = p.n_rows)
                         AND n.model_name = p.model_name
                         AND n.label IS NOT NULL AND n.prediction IS NOT NULL
                       ORDER BY n.id DESC
                       LIMIT p.error_window)) AS s) AS o
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
