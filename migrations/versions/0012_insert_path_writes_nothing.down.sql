-- Frozen: reverts revision 0012_insert_path_writes_nothing. Never edit.

-- As on the way up: no writer in flight, everything counted.
LOCK TABLE training_data IN SHARE MODE;
SELECT count(*) FROM refresh_drift();

CREATE TABLE drift_inbox (
    model_name  text NOT NULL,
    lo_id       bigint,     -- rows lo_id..hi_id, all of them this statement's
    hi_id       bigint,
    row_ids     bigint[],   -- or exactly these rows
    scored      bigint NOT NULL DEFAULT 0,   -- labelled rows with a prediction (delta)
    correct     bigint NOT NULL DEFAULT 0    -- of which prediction = label (delta)
);
CREATE INDEX drift_inbox_model_idx ON drift_inbox (model_name);

-- Rows counted since the baseline although their ids are below its
-- max_row_id (their transactions committed after it): few, and what lets a
-- label that reaches them later count towards the monitor's accuracy.
CREATE TABLE drift_late_rows (
    model_name  text NOT NULL REFERENCES drift_baselines ON DELETE CASCADE,
    lo_id       bigint NOT NULL,
    hi_id       bigint NOT NULL
);
CREATE INDEX drift_late_rows_model_idx ON drift_late_rows (model_name, lo_id);

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT r.rolname, string_agg(a.privilege_type, ', ') AS privileges
        FROM pg_class AS c
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        JOIN pg_roles AS r ON r.oid = a.grantee
        WHERE c.oid = 'drift_baselines'::regclass AND a.grantee <> c.relowner
        GROUP BY r.rolname
    LOOP
        EXECUTE format('GRANT %s ON drift_inbox, drift_late_rows TO %I', g.privileges, g.rolname);
    END LOOP;
END;
$$;

-- The gaps of before_ids (rows committed after the baseline with ids below
-- its before_max) become late rows again, below a max_row_id raised to
-- before_max.
INSERT INTO drift_late_rows (model_name, lo_id, hi_id)
SELECT d.model_name, lower(g), upper(g) - 1
FROM drift_baselines AS d
CROSS JOIN LATERAL unnest(int8multirange(int8range(d.max_row_id, d.before_max, '(]'))
                          - d.before_ids) AS g
WHERE d.before_max > d.max_row_id;
UPDATE drift_baselines SET max_row_id = before_max WHERE before_max > max_row_id;

DROP TRIGGER training_data_check_deleted ON training_data;
DROP TRIGGER training_data_truncated ON training_data;
DROP FUNCTION training_data_after_delete();
DROP FUNCTION training_data_after_truncate();

DROP FUNCTION retrain_check_training_rows(
    text, double precision, integer, integer, double precision, bigint, bigint, boolean, bigint,
    bigint);

CREATE FUNCTION retrain_check_training_rows(
    p_model_name text,
    p_threshold double precision,
    p_error_window integer,
    p_min_error_rows integer,
    p_max_error_rate double precision,
    p_max_error_row_id bigint,
    p_over_rows bigint,
    p_check_window boolean,
    p_newest_row_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_window_after   bigint;
    v_due            boolean;
    v_window_rows    integer;
    v_window_errors  integer;
    v_rate           double precision;
    v_armed          boolean;
    v_observed       jsonb := '{}';
    v_firings        bigint := 0;
BEGIN
    IF p_max_error_rate > p_threshold THEN
        v_observed := jsonb_build_object(
            'error_rate', p_max_error_rate,
            'threshold', p_threshold,
            'row_id', p_max_error_row_id);
        v_firings := p_over_rows;
    END IF;

    IF p_check_window THEN
        -- The model lock first, then the window in a statement of its own:
        -- it sees the rows of every writer that held the lock before us.
        PERFORM retrain_lock_model(p_model_name);
        SELECT r.error_check_due INTO v_due
        FROM retrain_models AS r
        WHERE r.model_name = p_model_name;
        -- Since the model's last successful retrain.
        SELECT e.error_window_after INTO v_window_after
        FROM retrain_events AS e
        WHERE e.model_name = p_model_name AND e.status = 'succeeded'
        ORDER BY e.id DESC
        LIMIT 1;

        SELECT count(*), count(*) FILTER (WHERE w.label <> w.prediction)
        INTO v_window_rows, v_window_errors
        FROM (SELECT t.label, t.prediction
              FROM training_data AS t
              WHERE t.model_name = p_model_name
                AND t.label IS NOT NULL AND t.prediction IS NOT NULL
                -- A row comparison only training_data_labelled_idx can
                -- serve: the generic plan PostgreSQL settles on would
                -- otherwise walk the primary key backwards and filter, which
                -- for a model with 0.1% of 300k rows took 35 ms instead of 1.
                AND (t.model_name, t.id) > (p_model_name, coalesce(v_window_after, 0))
              ORDER BY t.model_name DESC, t.id DESC
              LIMIT p_error_window) AS w;
        v_rate := v_window_errors::double precision / nullif(v_window_rows, 0);

        IF v_window_rows >= p_min_error_rows AND v_rate > p_threshold THEN
            v_observed := v_observed || jsonb_build_object(
                'rolling_error_rate', v_rate,
                'window_rows', v_window_rows,
                'threshold', p_threshold,
                'newest_row_id', p_newest_row_id);
            v_firings := greatest(v_firings, 1);
        END IF;

        v_armed := coalesce(v_window_rows < p_min_error_rows AND v_rate > p_threshold, false);
    END IF;

    IF v_firings > 0 THEN
        PERFORM record_retrain_event(p_model_name,
                                     jsonb_build_object('error_rate', v_observed),
                                     v_firings);
    END IF;
    -- After the event: its row is locked before the model's (see
    -- retrain_lock_model).
    IF v_armed IS DISTINCT FROM v_due THEN
        UPDATE retrain_models SET error_check_due = v_armed
        WHERE model_name = p_model_name;
    END IF;
END;
$$;

CREATE OR REPLACE FUNCTION store_drift_baseline(
    p_model_name text, p_model_version text, p_event_id bigint,
    p_baseline_rows bigint, p_features jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM drift_baselines WHERE model_name = p_model_name;
    DELETE FROM drift_inbox WHERE model_name = p_model_name;
    INSERT INTO drift_baselines (model_name, model_version, event_id, baseline_rows, max_row_id)
    VALUES (p_model_name, p_model_version, p_event_id, p_baseline_rows,
            coalesce((SELECT max(id) FROM training_data), 0));
    INSERT INTO drift_features (model_name, feature, kind, edges, categories)
    SELECT p_model_name, f ->> 'feature', f ->> 'kind',
           ARRAY(SELECT jsonb_array_elements_text(f -> 'edges'))::double precision[],
           ARRAY(SELECT jsonb_array_elements_text(f -> 'categories'))
    FROM jsonb_array_elements(p_features) AS f;
    INSERT INTO drift_bins (model_name, feature, bin, label, baseline_share)
    SELECT p_model_name, f ->> 'feature', (b ->> 'bin')::integer, b ->> 'label',
           (b ->> 'share')::double precision
    FROM jsonb_array_elements(p_features) AS f,
         jsonb_array_elements(f -> 'bins') AS b;
END;
$$;

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
    v_max_row_id   bigint;
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
        SELECT d.max_row_id INTO v_max_row_id
        FROM drift_baselines AS d WHERE d.model_name = m.model_name FOR UPDATE;

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

        -- Rows committed after the baseline with ids below its max_row_id:
        -- remembered, so that labels reaching them later count too.
        INSERT INTO drift_late_rows (model_name, lo_id, hi_id)
        SELECT m.model_name, r.lo, least(r.hi, v_max_row_id)
        FROM unnest(v_lo, v_hi) AS r(lo, hi)
        WHERE r.lo <= v_max_row_id
        UNION ALL
        SELECT m.model_name, u.id, u.id
        FROM unnest(v_ids) AS u(id)
        WHERE u.id <= v_max_row_id;

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

CREATE OR REPLACE FUNCTION training_data_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
-- The planner prices a 200k-row transition table high enough to JIT-compile
-- the set-based statement, which costs far more than it saves on a write path.
SET jit = off
AS $$
DECLARE
    v_id          bigint;
    v_model_name  text;
    v_label       text;
    v_prediction  text;
    v_error_rate  double precision;
    v_more_rows   boolean;
    v_enabled     boolean;
    v_threshold   double precision;
    v_window      integer;
    v_min_rows    integer;
    v_known       boolean;
    v_due         boolean;
    v_scored      boolean;
    m             record;
    v_renewed     boolean;
    v_over        bigint;
    v_row_id      bigint;
BEGIN
    SELECT n.id, n.model_name, n.label, n.prediction, n.error_rate,
           EXISTS (SELECT FROM inserted_rows AS o WHERE o.id <> n.id),
           coalesce(r.policy_version = (SELECT v.version FROM retrain_policy_version AS v),
                    false),
           r.enabled, r.error_rate_threshold,
           r.error_window, r.min_error_rows, r.error_check_due
    INTO v_id, v_model_name, v_label, v_prediction, v_error_rate,
         v_more_rows, v_known, v_enabled, v_threshold, v_window, v_min_rows, v_due
    FROM inserted_rows AS n
    LEFT JOIN retrain_models AS r ON r.model_name = n.model_name
    LIMIT 1;

    -- A known model's single row, its policy copies current; anything else
    -- (a new model, copies from before a policy change) takes the
    -- set-based statement below.
    IF v_known AND NOT v_more_rows THEN
        v_scored := v_label IS NOT NULL AND v_prediction IS NOT NULL;
        -- Tells the drift monitor that the row arrived; commits with it.
        INSERT INTO drift_inbox (model_name, lo_id, hi_id, scored, correct)
        VALUES (v_model_name, v_id, v_id, v_scored::integer,
                coalesce(v_label = v_prediction, false)::integer);
        IF v_enabled AND (v_error_rate > v_threshold OR v_label <> v_prediction
                          OR (v_due AND v_scored)) THEN
            PERFORM retrain_check_training_rows(
                v_model_name, v_threshold, v_window, v_min_rows, v_error_rate, v_id, 1,
                v_label <> v_prediction OR (v_due AND v_scored),
                CASE WHEN v_scored THEN v_id END);
        END IF;
        RETURN NULL;
    END IF;

    -- Any other statement: one set-based statement registers the models,
    -- tells the drift monitor which rows arrived, and returns only the
    -- models for which something may fire or whose policy copies are old.
    FOR m IN
        WITH arrived AS (
            SELECT n.model_name,
                   max(n.error_rate) AS max_error_rate,
                   count(*) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS scored,
                   count(*) FILTER (WHERE n.label = n.prediction) AS correct,
                   max(n.id) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS newest_scored,
                   count(*) AS n_rows, min(n.id) AS lo_id, max(n.id) AS hi_id
            FROM inserted_rows AS n
            GROUP BY n.model_name),
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
            FROM arrived AS a WHERE a.hi_id - a.lo_id + 1 <> a.n_rows)
        SELECT c.*
        FROM (SELECT a.model_name, a.max_error_rate, a.newest_scored, a.scored,
                     p.enabled, p.error_rate_threshold AS threshold, p.error_window,
                     p.min_error_rows, v.version AS policy_version,
                     r.model_name IS NOT NULL AND r.policy_version <> v.version AS copies_old,
                     -- A wrong prediction, or a due look at the window.
                     a.scored > a.correct OR (coalesce(r.error_check_due, false) AND a.scored > 0)
                         AS check_window
              FROM arrived AS a
              CROSS JOIN retrain_policy_version AS v
              CROSS JOIN LATERAL retrain_policy_for(a.model_name) AS p
              LEFT JOIN retrain_models AS r ON r.model_name = a.model_name) AS c
        WHERE (c.enabled AND (c.max_error_rate > c.threshold OR c.check_window))
           OR c.copies_old
        -- One lock order for every statement, whatever models it writes.
        ORDER BY c.model_name
    LOOP
        -- Old copies are renewed under the model's lock (its row is written
        -- by the holder of the lock), if it is free: a writer that holds it
        -- renews them itself, and this statement decides from the policy it
        -- read anyway. The window is then looked at with this statement's
        -- scored rows or the next ones: a changed threshold may already be
        -- exceeded.
        v_renewed := m.copies_old AND retrain_try_lock_model(m.model_name);
        IF v_renewed THEN
            UPDATE retrain_models
            SET enabled = m.enabled, error_rate_threshold = m.threshold,
                error_window = m.error_window, min_error_rows = m.min_error_rows,
                policy_version = m.policy_version, error_check_due = m.enabled
            WHERE model_name = m.model_name;
        END IF;
        CONTINUE WHEN NOT m.enabled;
        v_over := 0;
        v_row_id := NULL;
        IF m.max_error_rate > m.threshold THEN
            -- How many rows, and the first with the highest error_rate.
            SELECT count(*), min(n.id) FILTER (WHERE n.error_rate = m.max_error_rate)
            INTO v_over, v_row_id
            FROM inserted_rows AS n
            WHERE n.model_name = m.model_name AND n.error_rate > m.threshold;
        END IF;
        PERFORM retrain_check_training_rows(
            m.model_name, m.threshold, m.error_window, m.min_error_rows, m.max_error_rate,
            v_row_id, v_over, m.check_window OR (v_renewed AND m.scored > 0),
            m.newest_scored);
    END LOOP;
    RETURN NULL;
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
                   -- Counted by the monitor since the baseline: newer than
                   -- it, or committed after it with an older id (its
                   -- arrival still in the inbox, or already recorded late).
                   (SELECT n.id > d.max_row_id
                           OR EXISTS (SELECT FROM drift_inbox AS i
                                      WHERE i.model_name = n.model_name
                                        AND (n.id BETWEEN i.lo_id AND i.hi_id
                                             OR n.id = ANY (i.row_ids)))
                           OR EXISTS (SELECT FROM drift_late_rows AS l
                                      WHERE l.model_name = n.model_name
                                        AND n.id BETWEEN l.lo_id AND l.hi_id)
                    FROM drift_baselines AS d
                    WHERE d.model_name = n.model_name) AS since_baseline
            FROM updated_rows AS n
            JOIN old_rows AS o USING (id)
            WHERE n.error_rate IS DISTINCT FROM o.error_rate
               OR n.label IS DISTINCT FROM o.label
               OR n.prediction IS DISTINCT FROM o.prediction
               OR n.model_name IS DISTINCT FROM o.model_name),
        per_model AS (
            SELECT c.model_name,
                   max(c.error_rate) AS max_error_rate,
                   -- Rows that entered or left the window, or whose outcome
                   -- changed: the rolling error rate may have risen.
                   bool_or(c.is_scored IS DISTINCT FROM c.was_scored
                           OR c.is_error IS DISTINCT FROM c.was_error) AS window_changed,
                   max(c.id) FILTER (WHERE c.is_scored OR c.was_scored) AS newest_scored,
                   -- For the drift monitor's accuracy: labelled and correct rows
                   -- gained or lost since the baseline.
                   coalesce(sum(c.is_scored::int - c.was_scored::int)
                            FILTER (WHERE c.since_baseline), 0) AS scored_delta,
                   coalesce(sum((c.is_scored AND NOT c.is_error)::int
                                - (c.was_scored AND NOT c.was_error)::int)
                            FILTER (WHERE c.since_baseline), 0) AS correct_delta
            FROM changed AS c
            GROUP BY c.model_name)
        SELECT pm.*, p.enabled, p.error_rate_threshold AS threshold, p.error_window,
               p.min_error_rows
        FROM per_model AS pm
        CROSS JOIN LATERAL retrain_policy_for(pm.model_name) AS p
        ORDER BY pm.model_name
    LOOP
        IF NOT EXISTS (SELECT FROM retrain_models WHERE model_name = m.model_name) THEN
            INSERT INTO retrain_models (model_name) VALUES (m.model_name) ON CONFLICT DO NOTHING;
        END IF;
        v_over := 0;
        v_row_id := NULL;
        IF m.enabled AND m.max_error_rate > m.threshold THEN
            SELECT count(*), (array_agg(n.id ORDER BY n.error_rate DESC, n.id))[1]
            INTO v_over, v_row_id
            FROM updated_rows AS n
            JOIN old_rows AS o USING (id)
            WHERE n.model_name = m.model_name
              AND n.error_rate > m.threshold
              AND (n.error_rate IS DISTINCT FROM o.error_rate
                   OR n.label IS DISTINCT FROM o.label
                   OR n.prediction IS DISTINCT FROM o.prediction);
        END IF;
        IF m.enabled THEN
            PERFORM retrain_check_training_rows(m.model_name, m.threshold, m.error_window,
                                                m.min_error_rows, m.max_error_rate, v_row_id,
                                                v_over, m.window_changed, m.newest_scored);
        END IF;
        IF m.scored_delta <> 0 OR m.correct_delta <> 0 THEN
            INSERT INTO drift_inbox (model_name, scored, correct)
            VALUES (m.model_name, m.scored_delta, m.correct_delta);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

DROP FUNCTION drift_report_model(text, boolean);
DROP FUNCTION drift_horizon_advance(boolean);
DROP TABLE drift_label_changes;
DROP TABLE drift_writers;
DROP TABLE drift_horizon;
DROP TABLE retrain_window_voids;
DROP TABLE retrain_window_bounds;
ALTER TABLE drift_baselines
    DROP COLUMN before_ids,
    DROP COLUMN before_max,
    DROP COLUMN report_due;
