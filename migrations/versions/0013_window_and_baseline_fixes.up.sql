-- Frozen: applied by revision 0013_window_and_baseline_fixes. Never edit.
--
-- Fixes from a review of revision 0012: windows start again after a
-- TRUNCATE; REPEATABLE READ writers always void the bound; rows moved into a
-- model change its window; wrong predictions under a disabled policy void
-- the bound; training_data.id never changes; storing a baseline takes the
-- model's lock before the drift horizon; the worker's grants reach the
-- window tables on upgraded databases.

-- Windows that a TRUNCATE ... RESTART IDENTITY under revision 0012 left
-- after an id that neither the sequence nor any row has reached since:
-- they start at the first row again. (Where new ids have passed the old
-- start, the data cannot tell a restart; see the revision's notes.)
UPDATE retrain_events SET error_window_after = 0
WHERE error_window_after > greatest(
    coalesce(pg_sequence_last_value(pg_get_serial_sequence('training_data', 'id')::regclass), 0),
    coalesce((SELECT max(t.id) FROM training_data AS t), 0));

-- Whoever may refresh the monitor (sql/roles.sql: the worker) may write
-- these too, as on a fresh install.
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
        EXECUTE format('GRANT %s ON retrain_window_bounds, retrain_window_voids TO %I',
                       g.privileges, g.rolname);
    END LOOP;
END;
$$;

CREATE FUNCTION retrain_void_window(p_model_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF current_setting('transaction_isolation') = 'read committed'
       AND retrain_try_lock_model(p_model_name) THEN
        -- A statement of its own, after the lock: it sees what every read
        -- that held the lock before did.
        IF EXISTS (SELECT FROM retrain_window_voids AS x WHERE x.model_name = p_model_name) THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO retrain_window_voids (model_name) VALUES (p_model_name);
END;
$$;

CREATE OR REPLACE FUNCTION retrain_check_training_rows(
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
    v_voided         boolean;
    v_window_after   bigint;
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
               w.errors_at_most, w.rows_at_least, w.window_after, w.window_size,
               coalesce((SELECT e.error_window_after FROM retrain_events AS e
                         WHERE e.model_name = p_model_name AND e.status = 'succeeded'
                         ORDER BY e.id DESC
                         LIMIT 1), 0),
               EXISTS (SELECT FROM retrain_window_voids AS x WHERE x.model_name = p_model_name)
        INTO v_due, b.errors_at_most, b.rows_at_least, b.window_after, b.window_size,
             v_window_after, v_voided
        FROM (SELECT) AS one
        LEFT JOIN retrain_window_bounds AS w ON w.model_name = p_model_name;
        -- A transaction whose snapshot is older than its statements (REPEATABLE
        -- READ, SERIALIZABLE) may not see the newest bound, and writing one
        -- could fail on a concurrent update: it reads the window, and voids
        -- the bound instead of adding its wrong predictions to it. Always: a
        -- void it sees may have been taken away by a read it cannot see.
        v_keep_bound := current_setting('transaction_isolation') = 'read committed';
        IF NOT v_keep_bound THEN
            INSERT INTO retrain_window_voids (model_name) VALUES (p_model_name);
        END IF;

        IF v_keep_bound AND NOT v_due AND NOT v_voided AND p_new_errors IS NOT NULL
           AND b.window_after = v_window_after AND b.window_size = p_error_window
           AND b.rows_at_least > 0
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
            IF v_keep_bound THEN
                -- Before the read, so that it sees every row the voids taken
                -- here were about; later ones stay for the next read.
                DELETE FROM retrain_window_voids WHERE model_name = p_model_name;
            END IF;
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
            window_after = v_window_after, window_size = p_error_window
        WHERE model_name = p_model_name;
        IF NOT FOUND THEN
            INSERT INTO retrain_window_bounds
                (model_name, errors_at_most, rows_at_least, window_after, window_size)
            VALUES (p_model_name, v_window_errors, v_window_rows, v_window_after, p_error_window)
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
    -- not scored while the model's window must be looked at). Every
    -- expression here is compiled again for each statement, so they are few
    -- and mostly free of function calls.
    PERFORM
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
        IF v_enabled AND (v_error_rate > v_threshold OR v_label <> v_prediction
                          OR (v_due AND v_scored)) THEN
            PERFORM retrain_check_training_rows(
                v_model_name, v_threshold, v_window, v_min_rows, v_error_rate, v_id, 1,
                v_label <> v_prediction OR (v_due AND v_scored),
                CASE WHEN v_scored THEN v_id END,
                coalesce(v_label <> v_prediction, false)::integer);
        ELSIF NOT v_enabled AND v_label <> v_prediction THEN
            PERFORM retrain_void_window(v_model_name);
        END IF;
        RETURN NULL;
    END IF;

    -- Any other statement: one set-based statement registers the models and
    -- returns only the models for which something may fire or whose policy
    -- copies are old.
    FOR m IN
        WITH arrived AS (
            SELECT n.model_name,
                   max(n.error_rate) AS max_error_rate,
                   count(*) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS scored,
                   count(*) FILTER (WHERE n.label = n.prediction) AS correct,
                   max(n.id) FILTER (WHERE n.label IS NOT NULL AND n.prediction IS NOT NULL) AS newest_scored
            FROM inserted_rows AS n
            GROUP BY n.model_name),
        registered AS (
            INSERT INTO retrain_models (model_name)
            SELECT a.model_name FROM arrived AS a
            WHERE NOT EXISTS (SELECT FROM retrain_models AS r WHERE r.model_name = a.model_name)
            ON CONFLICT DO NOTHING)
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
           OR (NOT c.enabled AND c.check_window)
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
        IF NOT m.enabled THEN
            IF m.check_window THEN
                PERFORM retrain_void_window(m.model_name);
            END IF;
            CONTINUE;
        END IF;
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
BEGIN
    -- Rows moved to another model leave their old model's window.
    INSERT INTO retrain_window_voids (model_name)
    SELECT DISTINCT o.model_name
    FROM old_rows AS o
    JOIN updated_rows AS n USING (id)
    WHERE n.model_name IS DISTINCT FROM o.model_name;

    FOR m IN
        WITH changed AS (
            SELECT n.id, n.model_name, n.error_rate,
                   (o.label IS NOT NULL AND o.prediction IS NOT NULL) AS was_scored,
                   (n.label IS NOT NULL AND n.prediction IS NOT NULL) AS is_scored,
                   n.label <> n.prediction AS is_error,
                   o.label <> o.prediction AS was_error,
                   n.model_name IS DISTINCT FROM o.model_name AS moved_in,
                   -- Maybe counted by the monitor since the baseline, or to
                   -- be: above its max_row_id, or no baseline yet (one may
                   -- be committing); refresh_drift decides.
                   coalesce((SELECT n.id > d.max_row_id
                             FROM drift_baselines AS d
                             WHERE d.model_name = n.model_name), true) AS since_baseline
            FROM updated_rows AS n
            JOIN old_rows AS o USING (id)
            WHERE n.error_rate IS DISTINCT FROM o.error_rate
               OR n.label IS DISTINCT FROM o.label
               OR n.prediction IS DISTINCT FROM o.prediction
               OR n.model_name IS DISTINCT FROM o.model_name),
        per_model AS (
            SELECT c.model_name,
                   max(c.error_rate) AS max_error_rate,
                   -- Rows that entered or left the window (moved in from
                   -- another model, too), or whose outcome changed: the
                   -- rolling error rate may have risen.
                   bool_or(c.is_scored IS DISTINCT FROM c.was_scored
                           OR c.is_error IS DISTINCT FROM c.was_error
                           OR (c.moved_in AND c.is_scored)) AS window_changed,
                   max(c.id) FILTER (WHERE c.is_scored OR c.was_scored) AS newest_scored,
                   -- For the drift monitor's accuracy: per row, the labelled
                   -- and correct rows gained or lost since the baseline.
                   array_agg(c.id) FILTER (WHERE c.counts_change) AS change_ids,
                   array_agg(c.scored_delta) FILTER (WHERE c.counts_change) AS scored_deltas,
                   array_agg(c.correct_delta) FILTER (WHERE c.counts_change) AS correct_deltas
            FROM (SELECT ch.*, d.scored_delta, d.correct_delta,
                         ch.since_baseline AND (d.scored_delta <> 0 OR d.correct_delta <> 0)
                             AS counts_change
                  FROM changed AS ch
                  CROSS JOIN LATERAL (
                      SELECT ch.is_scored::int - ch.was_scored::int AS scored_delta,
                             (ch.is_scored AND NOT ch.is_error)::int
                             - (ch.was_scored AND NOT ch.was_error)::int AS correct_delta) AS d
                 ) AS c
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
                                                v_over, m.window_changed, m.newest_scored, NULL);
        ELSIF m.window_changed THEN
            PERFORM retrain_void_window(m.model_name);
        END IF;
        IF m.change_ids IS NOT NULL THEN
            INSERT INTO drift_label_changes (model_name, row_ids, scored, correct)
            VALUES (m.model_name, m.change_ids, m.scored_deltas, m.correct_deltas);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION training_data_after_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM retrain_window_bounds;
    DELETE FROM retrain_window_voids;
    UPDATE retrain_events SET error_window_after = 0 WHERE error_window_after <> 0;
    UPDATE drift_horizon SET counted_id = 0, newest_id = 0;
    DELETE FROM drift_writers;
    DELETE FROM drift_label_changes;
    UPDATE drift_baselines SET max_row_id = 0, before_ids = '{}', before_max = 0
    WHERE max_row_id <> 0 OR before_max <> 0;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION store_drift_baseline(
    p_model_name text, p_model_version text, p_event_id bigint,
    p_baseline_rows bigint, p_features jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_horizon  bigint;
BEGIN
    -- What was counted against the old baseline and not reported yet is
    -- reported before the baseline moves. That may need the model's lock (a
    -- writer of the model holds it to its commit): taken before the
    -- horizon's row, so that waiting for it holds up no refresh, and
    -- whenever there is an old baseline, because a refresh still running
    -- may make its report due.
    IF EXISTS (SELECT FROM drift_baselines AS b WHERE b.model_name = p_model_name) THEN
        PERFORM retrain_lock_model(p_model_name);
    END IF;
    v_horizon := drift_horizon_advance();
    PERFORM drift_report_model(p_model_name, true);
    DELETE FROM drift_baselines WHERE model_name = p_model_name;
    v_horizon := greatest(v_horizon, (SELECT h.counted_id FROM drift_horizon AS h));
    INSERT INTO drift_baselines (model_name, model_version, event_id, baseline_rows, max_row_id,
                                 before_ids, before_max)
    SELECT p_model_name, p_model_version, p_event_id, p_baseline_rows, v_horizon,
           coalesce(range_agg(int8range(t.id, t.id, '[]')), '{}'), coalesce(max(t.id), 0)
    FROM training_data AS t
    WHERE t.id > v_horizon;
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

CREATE FUNCTION training_data_before_id_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE EXCEPTION 'training_data.id must not change (row % would become %)', OLD.id, NEW.id
        USING ERRCODE = 'check_violation', COLUMN = 'id', TABLE = 'training_data',
              HINT = 'insert the row again and delete the old one';
END;
$$;

CREATE TRIGGER training_data_id_is_fixed
    AFTER UPDATE OF id ON training_data
    FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id)
    EXECUTE FUNCTION training_data_before_id_change();
