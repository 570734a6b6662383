-- Frozen: reverts revision 0005_drift_refresh_fixes. Never edit.

CREATE OR REPLACE FUNCTION refresh_drift(p_model_name text DEFAULT NULL)
RETURNS TABLE (model_name text, new_rows bigint, drift_score double precision,
               accuracy double precision, reported boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
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
                           CASE WHEN jsonb_typeof(v) = 'number'
                                THEN width_bucket(v::double precision, f.edges) ELSE -1 END
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
        reported := new_rows > 0
                    AND v_totals.recent_rows >= (retrain_policy_for(m.model_name)).drift_min_rows;
        IF reported THEN
            INSERT INTO model_metrics (model_name, model_version, accuracy, drift_score, source)
            VALUES (m.model_name, v_totals.model_version, accuracy, drift_score, 'monitor');
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
