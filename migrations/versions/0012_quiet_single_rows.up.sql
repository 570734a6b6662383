-- Frozen: applied by revision 0012_quiet_single_rows. Never edit.
--
-- A quiet single-row INSERT is one statement; a wrong prediction reads the
-- rolling window only when an upper bound on its errors, kept in
-- retrain_window_bounds, does not already rule out a firing.

CREATE TABLE retrain_window_bounds (
    model_name      text PRIMARY KEY,
    errors_at_most  integer NOT NULL,
    rows_at_least   integer NOT NULL,
    window_after    bigint NOT NULL,
    window_size     integer NOT NULL,
    removals        bigint NOT NULL
);

CREATE TABLE training_data_removals (
    one_row   boolean PRIMARY KEY DEFAULT true
        CONSTRAINT one_row_only CHECK (one_row),
    removals  bigint NOT NULL DEFAULT 0
);
INSERT INTO training_data_removals DEFAULT VALUES;

DROP FUNCTION retrain_check_training_rows(
    text, double precision, integer, integer, double precision, bigint, bigint, boolean, bigint);

CREATE FUNCTION retrain_check_training_rows(
    p_model_name text,
    p_threshold double precision,
    p_error_window integer,
    p_min_error_rows integer,
    p_max_error_rate double precision,
    p_max_error_row_id bigint,
    p_over_rows bigint,
    p_check_window boolean,
    p_newest_row_id bigint,
    p_new_errors bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_due            boolean;
    b                retrain_window_bounds;
    v_window_after   bigint;
    v_removals       bigint;
    v_keep_bound     boolean;
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
        -- What is known of the window, in one statement: the window starts
        -- after the model's last successful retrain.
        SELECT (SELECT r.error_check_due FROM retrain_models AS r
                WHERE r.model_name = p_model_name),
               w.errors_at_most, w.rows_at_least, w.window_after, w.window_size, w.removals,
               coalesce((SELECT e.error_window_after FROM retrain_events AS e
                         WHERE e.model_name = p_model_name AND e.status = 'succeeded'
                         ORDER BY e.id DESC
                         LIMIT 1), 0),
               (SELECT x.removals FROM training_data_removals AS x)
        INTO v_due, b.errors_at_most, b.rows_at_least, b.window_after, b.window_size,
             b.removals, v_window_after, v_removals
        FROM (SELECT) AS one
        LEFT JOIN retrain_window_bounds AS w ON w.model_name = p_model_name;
        -- A transaction whose snapshot is older than its statements (REPEATABLE
        -- READ, SERIALIZABLE) may not see the newest bound: it reads the window.
        v_keep_bound := current_setting('transaction_isolation') = 'read committed'
                        AND v_removals IS NOT NULL;

        IF v_keep_bound AND NOT v_due AND p_new_errors IS NOT NULL
           AND b.window_after = v_window_after AND b.window_size = p_error_window
           AND b.removals = v_removals AND b.rows_at_least > 0
           AND (b.errors_at_most + p_new_errors)::double precision
               / b.rows_at_least <= p_threshold THEN
            -- The window holds at least as many rows as at its last read (rows
            -- only leave it to make room for newer ones) and at most the errors
            -- then plus the wrong predictions since (a correct prediction cannot
            -- add one; every wrong one adds to the bound under the model lock,
            -- committed with its row): the rate cannot be over the threshold.
            v_window_errors := b.errors_at_most + p_new_errors;
            v_window_rows := b.rows_at_least;
            v_armed := false;
        ELSE
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
                    AND (t.model_name, t.id) > (p_model_name, v_window_after)
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
    IF v_keep_bound THEN
        UPDATE retrain_window_bounds
        SET errors_at_most = v_window_errors, rows_at_least = v_window_rows,
            window_after = v_window_after, window_size = p_error_window,
            removals = v_removals
        WHERE model_name = p_model_name;
        IF NOT FOUND THEN
            INSERT INTO retrain_window_bounds
                (model_name, errors_at_most, rows_at_least, window_after, window_size, removals)
            VALUES (p_model_name, v_window_errors, v_window_rows, v_window_after,
                    p_error_window, v_removals)
            ON CONFLICT (model_name) DO NOTHING;
        END IF;
    END IF;
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
    -- The common case, whole: the statement's only row, of a known model
    -- whose policy is enabled and whose copies are current, that can fire
    -- nothing (error_rate at most the threshold; not a wrong prediction;
    -- not scored while the model's window must be looked at). Then it is
    -- correct if scored. Every expression here is compiled again for each
    -- statement, so they are few and mostly free of function calls.
    INSERT INTO drift_inbox (model_name, lo_id, hi_id, scored, correct)
    SELECT n.model_name, n.id, n.id,
           CASE WHEN n.label IS NULL OR n.prediction IS NULL THEN 0 ELSE 1 END,
           CASE WHEN n.label IS NULL OR n.prediction IS NULL THEN 0 ELSE 1 END
    FROM inserted_rows AS n
    JOIN retrain_models AS r ON r.model_name = n.model_name
    WHERE r.enabled
      AND (n.error_rate > r.error_rate_threshold) IS NOT TRUE
      AND CASE WHEN r.error_check_due THEN n.label IS NULL OR n.prediction IS NULL
               ELSE (n.label <> n.prediction) IS NOT TRUE END
      AND r.policy_version = (SELECT v.version FROM retrain_policy_version AS v)
      AND NOT EXISTS (SELECT FROM inserted_rows AS o WHERE o.id <> n.id);
    IF FOUND THEN
        RETURN NULL;
    END IF;

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
                CASE WHEN v_scored THEN v_id END,
                coalesce(v_label <> v_prediction, false)::integer);
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
                     a.scored - a.correct AS new_errors, p.enabled, p.error_rate_threshold AS threshold, p.error_window,
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
            m.newest_scored, m.new_errors);
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
    v_moved   boolean := false;
BEGIN
    FOR m IN
        WITH changed AS (
            SELECT n.id, n.model_name, n.error_rate,
                   n.model_name IS DISTINCT FROM o.model_name AS moved,
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
                   bool_or(c.moved) AS moved,
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
        v_moved := v_moved OR m.moved;
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
                                                v_over, m.window_changed, m.newest_scored, NULL);
        END IF;
        IF m.scored_delta <> 0 OR m.correct_delta <> 0 THEN
            INSERT INTO drift_inbox (model_name, scored, correct)
            VALUES (m.model_name, m.scored_delta, m.correct_delta);
        END IF;
    END LOOP;
    IF v_moved THEN
        UPDATE training_data_removals SET removals = removals + 1;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION training_data_after_removal()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE training_data_removals SET removals = removals + 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER training_data_rows_removed
    AFTER DELETE OR TRUNCATE ON training_data
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_removal();
