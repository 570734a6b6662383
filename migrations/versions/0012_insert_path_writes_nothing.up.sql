-- Frozen: applied by revision 0012_insert_path_writes_nothing. Never edit.
--
-- A quiet single-row INSERT is one read-only statement; a wrong prediction
-- reads the rolling window only when a kept bound on its errors does not
-- rule out a firing; the drift monitor counts training_data by id up to a
-- horizon held back by the transactions writing it, so the insert path
-- writes nothing for it (drift_inbox and drift_late_rows go).

-- Wait for the writers in flight, and hold new ones off until this commits;
-- then count what the old arrival records hold. From here on every row up
-- to the newest id has been counted.
LOCK TABLE training_data IN SHARE MODE;
SELECT count(*) FROM refresh_drift();

CREATE TABLE retrain_window_bounds (
    model_name      text PRIMARY KEY,
    errors_at_most  integer NOT NULL,
    rows_at_least   integer NOT NULL,
    window_after    bigint NOT NULL,
    window_size     integer NOT NULL
);

CREATE TABLE retrain_window_voids (
    model_name  text NOT NULL
);
CREATE INDEX retrain_window_voids_model_idx ON retrain_window_voids (model_name);

ALTER TABLE drift_baselines
    ADD COLUMN before_ids int8multirange NOT NULL DEFAULT '{}',
    ADD COLUMN before_max bigint NOT NULL DEFAULT 0,
    ADD COLUMN report_due boolean NOT NULL DEFAULT false;
-- A baseline's late rows (committed after it, ids at or below max_row_id)
-- become the gaps of before_ids: the ids at or below max_row_id that were
-- visible when it was stored.
UPDATE drift_baselines AS d
SET max_row_id = l.first_late - 1,
    before_ids = int8multirange(int8range(l.first_late - 1, d.max_row_id, '(]')) - l.late,
    before_max = d.max_row_id
FROM (SELECT model_name, min(lo_id) AS first_late,
             range_agg(int8range(lo_id, hi_id, '[]')) AS late
      FROM drift_late_rows GROUP BY model_name) AS l
WHERE l.model_name = d.model_name AND l.first_late <= d.max_row_id;

CREATE TABLE drift_horizon (
    one_row     boolean PRIMARY KEY DEFAULT true
        CONSTRAINT one_row_only CHECK (one_row),
    counted_id  bigint NOT NULL DEFAULT 0,
    newest_id   bigint NOT NULL DEFAULT 0,
    counted_at  timestamptz
);
INSERT INTO drift_horizon (counted_id, newest_id, counted_at)
SELECT coalesce(max(id), 0), coalesce(max(id), 0), now() FROM training_data;

CREATE TABLE drift_writers (
    vxid        text PRIMARY KEY,
    pid         integer,
    lo_id       bigint NOT NULL,
    seen_since  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE drift_label_changes (
    model_name  text NOT NULL,
    row_ids     bigint[] NOT NULL,
    scored      integer[] NOT NULL,
    correct     integer[] NOT NULL
);

-- Whoever may refresh the monitor (sql/roles.sql: the worker) may write these.
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
        EXECUTE format('GRANT %s ON drift_horizon, drift_writers, drift_label_changes TO %I', g.privileges, g.rolname);
    END LOOP;
END;
$$;

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
        -- the bound instead of adding its wrong predictions to it.
        v_keep_bound := current_setting('transaction_isolation') = 'read committed';
        IF NOT v_keep_bound AND NOT v_voided THEN
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

CREATE FUNCTION drift_horizon_advance(p_wait boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_counted        bigint;
    v_newest_before  bigint;
    v_newest         bigint;
    v_sequence       regclass;
    v_handed_out     bigint;
BEGIN
    -- training_data first (before anything else looks at it): a TRUNCATE,
    -- which resets drift_horizon, takes them in that order too.
    IF p_wait THEN
        LOCK TABLE training_data IN ACCESS SHARE MODE;
    ELSE
        BEGIN
            LOCK TABLE training_data IN ACCESS SHARE MODE NOWAIT;
        EXCEPTION WHEN lock_not_available THEN
            RETURN NULL;
        END;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'the drift monitor counts rows in READ COMMITTED transactions only, not %',
                        current_setting('transaction_isolation')
            USING ERRCODE = 'feature_not_supported';
    END IF;
    v_sequence := pg_get_serial_sequence('training_data', 'id')::regclass;
    IF EXISTS (SELECT FROM pg_sequence AS s
               WHERE s.seqrelid = v_sequence
                 AND (s.seqcache > 1 OR s.seqincrement <= 0 OR s.seqcycle)) THEN
        RAISE EXCEPTION 'the drift monitor needs training_data ids handed out in order: '
                        'the id sequence caches values, counts down or cycles'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'ALTER TABLE training_data ALTER COLUMN id SET CACHE 1 '
                         'SET INCREMENT BY 1 SET NO CYCLE';
    END IF;

    SELECT h.counted_id, h.newest_id INTO v_counted, v_newest_before
    FROM drift_horizon AS h FOR UPDATE;
    v_newest := coalesce((SELECT max(t.id) FROM training_data AS t), 0);
    -- Read after the newest id: every id handed out before it is at most this.
    v_handed_out := coalesce(pg_sequence_last_value(v_sequence), 0);

    -- Writers that finished since the last look; then the ones writing now
    -- (a look of its own: one that finished in between holds the horizon back
    -- until the next refresh, no longer).
    DELETE FROM drift_writers AS w
    WHERE NOT EXISTS (SELECT FROM pg_locks AS l
                      WHERE l.virtualtransaction = w.vxid
                        AND l.locktype = 'relation'
                        AND l.database = (SELECT d.oid FROM pg_database AS d
                                          WHERE d.datname = current_database())
                        AND l.relation = 'training_data'::regclass
                        AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock',
                                       'ExclusiveLock', 'AccessExclusiveLock')
                        AND l.granted);
    INSERT INTO drift_writers (vxid, pid, lo_id)
    SELECT DISTINCT ON (l.virtualtransaction) l.virtualtransaction, l.pid,
           -- A prepared transaction (no backend) may have been listed under
           -- its first name before a restart.
           CASE WHEN l.pid IS NULL THEN v_counted ELSE v_newest_before END
    FROM pg_locks AS l
    WHERE l.locktype = 'relation'
      AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
      AND l.relation = 'training_data'::regclass
      AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock',
                     'ExclusiveLock', 'AccessExclusiveLock')
      AND l.granted
      -- This transaction's own rows are visible to it (and go if it rolls back).
      AND l.pid IS DISTINCT FROM pg_backend_pid()
    ON CONFLICT (vxid) DO NOTHING;

    -- The bound for writers first seen at the next look: ids the sequence
    -- hands out later are above it (an id of its own above the sequence is not).
    UPDATE drift_horizon SET newest_id = least(v_newest, v_handed_out);
    RETURN least(v_newest, v_handed_out, (SELECT min(w.lo_id) FROM drift_writers AS w));
END;
$$;
REVOKE EXECUTE ON FUNCTION drift_horizon_advance(boolean) FROM PUBLIC;
-- Whoever may check the schedules (sql/roles.sql: the worker) may refresh.
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT r.rolname, 'EXECUTE' AS privileges
        FROM pg_proc AS p
        CROSS JOIN LATERAL aclexplode(p.proacl) AS a
        JOIN pg_roles AS r ON r.oid = a.grantee
        WHERE p.oid = 'check_retrain_schedules()'::regprocedure AND a.grantee <> p.proowner
          AND a.privilege_type = 'EXECUTE'
    LOOP
        EXECUTE format('GRANT %s ON FUNCTION drift_horizon_advance(boolean) TO %I', g.privileges, g.rolname);
    END LOOP;
END;
$$;

CREATE FUNCTION drift_report_model(
    p_model_name text, p_wait boolean,
    OUT drift_score double precision, OUT accuracy double precision, OUT reported boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    d       drift_baselines;
    v_held  boolean;
BEGIN
    reported := false;
    IF p_wait THEN
        SELECT * INTO d FROM drift_baselines AS b WHERE b.model_name = p_model_name FOR UPDATE;
        v_held := FOUND;
        IF v_held AND d.report_due THEN
            PERFORM retrain_lock_model(p_model_name);
        END IF;
    ELSE
        SELECT * INTO d FROM drift_baselines AS b
        WHERE b.model_name = p_model_name FOR UPDATE SKIP LOCKED;
        v_held := FOUND AND (NOT d.report_due OR retrain_try_lock_model(p_model_name));
        IF NOT FOUND THEN
            SELECT * INTO d FROM drift_baselines AS b WHERE b.model_name = p_model_name;
        END IF;
    END IF;
    IF d.model_name IS NULL THEN
        RETURN;
    END IF;
    SELECT max(fd.psi) INTO drift_score FROM feature_drift AS fd WHERE fd.model_name = p_model_name;
    accuracy := CASE WHEN d.labelled_rows > 0 THEN
                    greatest(0, least(1, d.correct_rows::double precision / d.labelled_rows)) END;
    IF v_held AND d.report_due THEN
        reported := d.recent_rows >= (retrain_policy_for(p_model_name)).drift_min_rows;
        IF reported THEN
            INSERT INTO model_metrics (model_name, model_version, accuracy, drift_score, source)
            VALUES (p_model_name, d.model_version, accuracy, drift_score, 'monitor');
        END IF;
        UPDATE drift_baselines AS b SET report_due = false WHERE b.model_name = p_model_name;
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
DECLARE
    v_horizon  bigint;
BEGIN
    v_horizon := drift_horizon_advance();
    -- What was counted against the old baseline and not reported yet is
    -- reported before the baseline moves (this may wait for the model's lock).
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
    v_from     bigint;
    v_to       bigint;
    v_scan     bigint;
    v_models   text[] := '{}';
    v_rows     bigint[] := '{}';
    v_scored   bigint[] := '{}';
    v_correct  bigint[] := '{}';
    v_unseen   jsonb[] := '{}';
    m          record;
BEGIN
    v_to := drift_horizon_advance(false);
    -- NULL while training_data is locked exclusively: count nothing now (the
    -- counting statement would wait for the lock); report what is due.
    IF v_to IS NOT NULL THEN
        SELECT h.counted_id INTO v_from FROM drift_horizon AS h;
        v_to := greatest(v_to, v_from);
        -- Rows at or below every baseline's max_row_id are no baseline's recent
        -- rows (and with no baseline there is nothing to count).
        v_scan := greatest(v_from, coalesce((SELECT min(d.max_row_id) FROM drift_baselines AS d), v_to));

        -- One statement, so one snapshot: whether a label change taken here was
        -- already in its row when the row was counted is decided by the row's id
        -- alone (counted before: at or below v_from).
        WITH changes AS (
            DELETE FROM drift_label_changes AS c
            RETURNING c.model_name, c.row_ids, c.scored, c.correct),
        -- The ids visible when each baseline was stored, read (and detoasted)
        -- once, not once per row; tested only below before_max.
        baselines AS MATERIALIZED (
            SELECT d.model_name, d.max_row_id, d.before_max,
                   d.before_ids + '{}'::int8multirange AS before_ids
            FROM drift_baselines AS d),
        changed AS (
            SELECT c.model_name, sum(u.scored) AS scored, sum(u.correct) AS correct
            FROM changes AS c
            JOIN baselines AS d ON d.model_name = c.model_name
            CROSS JOIN LATERAL unnest(c.row_ids, c.scored, c.correct) AS u(row_id, scored, correct)
            WHERE u.row_id <= v_from AND u.row_id > d.max_row_id
              AND (u.row_id > d.before_max OR NOT u.row_id <@ d.before_ids)
            GROUP BY c.model_name),
        arrived AS MATERIALIZED (
            SELECT t.model_name, t.features,
                   t.label IS NOT NULL AND t.prediction IS NOT NULL AS scored,
                   coalesce(t.label = t.prediction, false) AS correct
            FROM training_data AS t
            JOIN baselines AS d ON d.model_name = t.model_name
            WHERE t.id > v_scan AND t.id <= v_to AND t.id > d.max_row_id
              AND (t.id > d.before_max OR NOT t.id <@ d.before_ids)),
        binned AS (
            SELECT a.model_name, f.feature,
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
            JOIN drift_features AS f ON f.model_name = a.model_name AND f.kind <> 'unseen'
            CROSS JOIN LATERAL (SELECT a.features -> f.feature AS v) AS x),
        counted AS (
            UPDATE drift_bins AS b
            SET recent_count = b.recent_count + c.n
            FROM (SELECT binned.model_name, binned.feature, binned.bin, count(*) AS n
                  FROM binned GROUP BY binned.model_name, binned.feature, binned.bin) AS c
            WHERE b.model_name = c.model_name AND b.feature = c.feature AND b.bin = c.bin
            RETURNING 1),
        -- Features that appeared after the baseline: reported, not scored.
        unseen AS (
            SELECT u.model_name, jsonb_object_agg(u.key, u.n) AS keys
            FROM (SELECT a.model_name, k.key, count(*) AS n
                  FROM arrived AS a, jsonb_object_keys(a.features) AS k(key)
                  WHERE NOT EXISTS (SELECT FROM drift_features AS f
                                    WHERE f.model_name = a.model_name AND f.feature = k.key
                                      AND f.kind <> 'unseen')
                  GROUP BY a.model_name, k.key) AS u
            GROUP BY u.model_name),
        per_model AS (
            SELECT a.model_name, count(*) AS new_rows,
                   count(*) FILTER (WHERE a.scored) AS scored,
                   count(*) FILTER (WHERE a.correct) AS correct
            FROM arrived AS a
            GROUP BY a.model_name)
        SELECT coalesce(array_agg(d.model_name ORDER BY d.model_name), '{}'),
               coalesce(array_agg(coalesce(p.new_rows, 0) ORDER BY d.model_name), '{}'),
               coalesce(array_agg(coalesce(p.scored, 0) + coalesce(ch.scored, 0)
                                  ORDER BY d.model_name), '{}'),
               coalesce(array_agg(coalesce(p.correct, 0) + coalesce(ch.correct, 0)
                                  ORDER BY d.model_name), '{}'),
               coalesce(array_agg(coalesce(un.keys, '{}') ORDER BY d.model_name), '{}')
        INTO v_models, v_rows, v_scored, v_correct, v_unseen
        FROM drift_baselines AS d
        LEFT JOIN per_model AS p ON p.model_name = d.model_name
        LEFT JOIN changed AS ch ON ch.model_name = d.model_name
        LEFT JOIN unseen AS un ON un.model_name = d.model_name
        CROSS JOIN (SELECT count(*) FROM counted) AS force_update
        WHERE p.model_name IS NOT NULL OR ch.model_name IS NOT NULL;

        UPDATE drift_horizon SET counted_id = v_to, counted_at = now();
    END IF;

    FOR i IN 1 .. cardinality(v_models) LOOP
        INSERT INTO drift_features (model_name, feature, kind)
        SELECT v_models[i], u.key, 'unseen' FROM jsonb_object_keys(v_unseen[i]) AS u(key)
        ON CONFLICT DO NOTHING;
        INSERT INTO drift_bins AS b (model_name, feature, bin, label, baseline_share, recent_count)
        SELECT v_models[i], u.key, 1, 'present', 0, u.value::bigint
        FROM jsonb_each_text(v_unseen[i]) AS u
        ON CONFLICT ON CONSTRAINT drift_bins_pkey
        DO UPDATE SET recent_count = b.recent_count + excluded.recent_count;

        UPDATE drift_baselines AS d
        SET recent_rows = d.recent_rows + v_rows[i],
            labelled_rows = d.labelled_rows + v_scored[i],
            correct_rows = d.correct_rows + v_correct[i],
            refreshed_at = now(),
            -- New rows, or labels that arrived for rows since the baseline:
            -- the monitor's accuracy changed either way.
            report_due = d.report_due OR v_rows[i] > 0 OR v_scored[i] <> 0 OR v_correct[i] <> 0
        WHERE d.model_name = v_models[i];
    END LOOP;

    FOR m IN
        SELECT d.model_name, coalesce(u.new_rows, 0) AS new_rows
        FROM drift_baselines AS d
        LEFT JOIN unnest(v_models, v_rows) AS u(model_name, new_rows)
               ON u.model_name = d.model_name
        WHERE d.report_due OR u.model_name IS NOT NULL
        ORDER BY d.model_name
    LOOP
        model_name := m.model_name;
        new_rows := m.new_rows;
        -- One model's failure (its checks, a trigger of the user's) must not
        -- stop the others: its report stays due, and is tried again.
        BEGIN
            SELECT r.drift_score, r.accuracy, r.reported INTO drift_score, accuracy, reported
            FROM drift_report_model(m.model_name, false) AS r;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'drift monitor: the report of model % failed: %', m.model_name, SQLERRM;
            drift_score := NULL;
            accuracy := NULL;
            reported := false;
        END;
        IF p_model_name IS NULL OR m.model_name = p_model_name THEN
            RETURN NEXT;
        END IF;
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
                   -- Rows that entered or left the window, or whose outcome
                   -- changed: the rolling error rate may have risen.
                   bool_or(c.is_scored IS DISTINCT FROM c.was_scored
                           OR c.is_error IS DISTINCT FROM c.was_error) AS window_changed,
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
        END IF;
        IF m.change_ids IS NOT NULL THEN
            INSERT INTO drift_label_changes (model_name, row_ids, scored, correct)
            VALUES (m.model_name, m.change_ids, m.scored_deltas, m.correct_deltas);
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE FUNCTION training_data_after_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
SET jit = off
AS $$
BEGIN
    INSERT INTO retrain_window_voids (model_name)
    SELECT d.model_name
    FROM (SELECT o.model_name, max(o.id) AS newest FROM deleted_rows AS o
          GROUP BY o.model_name) AS d
    WHERE d.newest > coalesce((SELECT e.error_window_after FROM retrain_events AS e
                               WHERE e.model_name = d.model_name AND e.status = 'succeeded'
                               ORDER BY e.id DESC
                               LIMIT 1), 0);
    RETURN NULL;
END;
$$;

CREATE FUNCTION training_data_after_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM retrain_window_bounds;
    DELETE FROM retrain_window_voids;
    UPDATE drift_horizon SET counted_id = 0, newest_id = 0;
    DELETE FROM drift_writers;
    DELETE FROM drift_label_changes;
    UPDATE drift_baselines SET max_row_id = 0, before_ids = '{}', before_max = 0
    WHERE max_row_id <> 0 OR before_max <> 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER training_data_check_deleted
    AFTER DELETE ON training_data
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_delete();

CREATE TRIGGER training_data_truncated
    AFTER TRUNCATE ON training_data
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_truncate();

DROP TABLE drift_late_rows;
DROP TABLE drift_inbox;
