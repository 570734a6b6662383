-- Frozen: reverts revision 0011_error_window_scan. Never edit.

-- The kept error windows start empty again.
CREATE TABLE retrain_error_windows (
    model_name  text PRIMARY KEY,
    row_ids     bigint[] NOT NULL,
    is_error    boolean[] NOT NULL
);

CREATE FUNCTION retrain_advance_error_window(
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

DROP FUNCTION retrain_check_training_rows(text, double precision, bigint, bigint,
                                          boolean, bigint);
CREATE FUNCTION retrain_check_training_rows(
    p_model_name text,
    p_over_rows bigint,
    p_max_error_rate double precision,
    p_max_error_row_id bigint,
    p_new_ids bigint[],
    p_new_errors boolean[],
    p_changed_ids bigint[] DEFAULT '{}',
    p_changed_errors boolean[] DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_policy    retrain_policies := retrain_policy_for(p_model_name);
    v_window_rows    integer := 0;
    v_window_errors  integer := 0;
    v_observed  jsonb := '{}';
    v_firings   bigint := 0;
BEGIN
    IF cardinality(p_new_ids) > 0 OR cardinality(p_changed_ids) > 0 THEN
        -- Kept up to date even while the policy is disabled, so that
        -- enabling it finds a correct window.
        SELECT w.window_rows, w.window_errors INTO v_window_rows, v_window_errors
        FROM retrain_advance_error_window(p_model_name, v_policy.error_window,
                                          p_new_ids, p_new_errors,
                                          p_changed_ids, p_changed_errors) AS w;
    END IF;

    IF NOT v_policy.enabled THEN
        RETURN;
    END IF;

    IF p_max_error_rate > v_policy.error_rate_threshold THEN
        v_observed := jsonb_build_object(
            'error_rate', p_max_error_rate,
            'threshold', v_policy.error_rate_threshold,
            'row_id', p_max_error_row_id);
        v_firings := p_over_rows;
    END IF;

    IF v_window_rows >= v_policy.min_error_rows
       AND v_window_errors::double precision / v_window_rows > v_policy.error_rate_threshold THEN
        v_observed := v_observed || jsonb_build_object(
            'rolling_error_rate', v_window_errors::double precision / v_window_rows,
            'window_rows', v_window_rows,
            'threshold', v_policy.error_rate_threshold,
            'newest_row_id', coalesce(p_new_ids[cardinality(p_new_ids)],
                                      p_changed_ids[cardinality(p_changed_ids)]));
        v_firings := greatest(v_firings, 1);
    END IF;

    IF v_firings > 0 THEN
        PERFORM record_retrain_event(p_model_name,
                                     jsonb_build_object('error_rate', v_observed),
                                     v_firings);
    END IF;
END;
$$;

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
            -- Sorted before the lateral takes the locks: one lock order for
            -- every statement, whatever models it writes.
            FROM (SELECT * FROM policy ORDER BY model_name) AS p
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

CREATE OR REPLACE FUNCTION retrain_events_after_success()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM retrain_error_windows WHERE model_name = NEW.model_name;
    RETURN NULL;
END;
$$;

CREATE TABLE drift_inbox_0010 (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name  text NOT NULL,
    lo_id       bigint,     -- rows lo_id..hi_id, all of them this statement's
    hi_id       bigint,
    row_ids     bigint[],   -- or exactly these rows
    scored      bigint NOT NULL DEFAULT 0,   -- labelled rows with a prediction (delta)
    correct     bigint NOT NULL DEFAULT 0    -- of which prediction = label (delta)
);
INSERT INTO drift_inbox_0010 (model_name, lo_id, hi_id, row_ids, scored, correct)
SELECT model_name, lo_id, hi_id, row_ids, scored, correct FROM drift_inbox;
DROP TABLE drift_inbox;
ALTER TABLE drift_inbox_0010 RENAME TO drift_inbox;
ALTER TABLE drift_inbox RENAME CONSTRAINT drift_inbox_0010_pkey TO drift_inbox_pkey;
ALTER SEQUENCE drift_inbox_0010_id_seq RENAME TO drift_inbox_id_seq;
CREATE INDEX drift_inbox_model_idx ON drift_inbox (model_name);

ALTER TABLE retrain_models
    DROP COLUMN error_window_after,
    DROP COLUMN error_check_due;
