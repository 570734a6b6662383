-- Frozen: applied by revision 0004_drift_monitor. Never edit; change
-- sql/schema.sql and add a revision instead.

-- ---------------------------------------------------------------------------
-- The drift monitor (SPEC section 6)
-- ---------------------------------------------------------------------------
--
-- The insert path only records which rows arrived (drift_inbox: one row per
-- statement and model, a range of ids or, when ids interleave with another
-- writer's, their list) and the labelled/correct counts it saw. Entries
-- commit with the rows, so a row whose transaction commits late is still
-- counted, exactly once. refresh_drift() takes a model's entries, bins just
-- those rows in one set-based statement and appends a 'monitor' metrics row:
-- its cost follows the new rows, never the size of training_data.

-- A model's current baseline and the running totals since it was stored.
CREATE TABLE drift_baselines (
    model_name     text PRIMARY KEY,
    model_version  text,
    event_id       bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    baseline_rows  bigint NOT NULL,
    -- The newest training_data id when the baseline was stored: a label that
    -- arrives later by UPDATE counts towards the recent accuracy above it.
    max_row_id     bigint NOT NULL,
    recent_rows    bigint NOT NULL DEFAULT 0,
    labelled_rows  bigint NOT NULL DEFAULT 0,
    correct_rows   bigint NOT NULL DEFAULT 0,
    refreshed_at   timestamptz
);

-- Per feature: how a value finds its bin. numeric: width_bucket(value,
-- edges); categorical: 1-based position in categories, 0 = other; -1 =
-- missing. 'unseen': a feature that appeared after the baseline (reported,
-- not scored).
CREATE TABLE drift_features (
    model_name  text NOT NULL REFERENCES drift_baselines ON DELETE CASCADE,
    feature     text NOT NULL,
    kind        text NOT NULL
        CONSTRAINT kind_is_known CHECK (kind IN ('numeric', 'categorical', 'unseen')),
    edges       double precision[] NOT NULL DEFAULT '{}',
    categories  text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (model_name, feature)
);

CREATE TABLE drift_bins (
    model_name      text NOT NULL,
    feature         text NOT NULL,
    bin             integer NOT NULL,
    label           text NOT NULL,
    baseline_share  double precision NOT NULL,
    recent_count    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (model_name, feature, bin),
    FOREIGN KEY (model_name, feature) REFERENCES drift_features ON DELETE CASCADE
);

CREATE TABLE drift_inbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name  text NOT NULL,
    lo_id       bigint,     -- rows lo_id..hi_id, all of them this statement's
    hi_id       bigint,
    row_ids     bigint[],   -- or exactly these rows
    scored      bigint NOT NULL DEFAULT 0,   -- labelled rows with a prediction (delta)
    correct     bigint NOT NULL DEFAULT 0    -- of which prediction = label (delta)
);
CREATE INDEX drift_inbox_model_idx ON drift_inbox (model_name);

-- Stores a fresh baseline (the worker calls it in the transaction that
-- records a successful retrain). p_features: [{feature, kind, edges,
-- categories, bins: [{bin, label, share}]}]. Inbox entries committed before
-- now belong to the old distribution and are dropped.
CREATE FUNCTION store_drift_baseline(
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

-- Population Stability Index per feature, with a floor for empty bins, and
-- the bins themselves, for psql.
CREATE VIEW feature_drift AS
SELECT f.model_name,
       f.feature,
       f.kind,
       CASE WHEN f.kind <> 'unseen' AND d.recent_rows > 0 THEN s.psi END AS psi,
       d.recent_rows,
       d.baseline_rows,
       s.bins
FROM drift_features AS f
JOIN drift_baselines AS d USING (model_name)
CROSS JOIN LATERAL (
    SELECT sum((r - p) * ln(r / p)) AS psi,
           jsonb_agg(jsonb_build_object(
               'bin', x.bin, 'label', x.label,
               'baseline_share', round(x.baseline_share::numeric, 4),
               'recent_share', round(x.recent_share::numeric, 4)) ORDER BY x.bin) AS bins
    FROM (SELECT b.bin, b.label, b.baseline_share,
                 b.recent_count::double precision / nullif(d.recent_rows, 0) AS recent_share,
                 greatest(b.baseline_share, 0.0001) AS p,
                 greatest(coalesce(b.recent_count::double precision
                                   / nullif(d.recent_rows, 0), 0), 0.0001) AS r
          FROM drift_bins AS b
          WHERE b.model_name = f.model_name AND b.feature = f.feature) AS x
) AS s;

-- Brings the recent counts of one model (or all) up to date with the rows
-- that arrived since the last refresh, and appends a 'monitor' metrics row
-- once drift_min_rows rows arrived since the baseline. That row fires the
-- checks of model_metrics (drift_and_accuracy, drift, performance).
-- Safe to call from any number of workers at once. Runs with the caller's
-- rights: the worker's role (sql/roles.sql) may write these tables.
CREATE FUNCTION refresh_drift(p_model_name text DEFAULT NULL)
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

-- The insert path records arrivals for the monitor.
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
               count(*) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS scored,
               count(*) FILTER (WHERE n.label = n.prediction) AS correct,
               count(*) AS n_rows, min(n.id) AS lo_id, max(n.id) AS hi_id
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

        -- For the drift monitor: which rows arrived (a range when their ids
        -- are contiguous, as in any single-writer load), committed with them.
        INSERT INTO drift_inbox (model_name, lo_id, hi_id, row_ids, scored, correct)
        SELECT m.model_name, m.lo_id, m.hi_id, NULL, m.scored, m.correct
        WHERE m.hi_id - m.lo_id + 1 = m.n_rows
        UNION ALL
        SELECT m.model_name, NULL, NULL, array_agg(n.id), m.scored, m.correct
        FROM inserted_rows AS n
        WHERE m.hi_id - m.lo_id + 1 <> m.n_rows AND n.model_name = m.model_name
        HAVING count(*) > 0;
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
