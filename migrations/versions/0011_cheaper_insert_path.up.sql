-- Frozen: applied by revision 0011_cheaper_insert_path. Never edit; change sql/schema.sql
-- and add a revision instead.

-- A cheaper insert path. The rolling error window is read from
-- training_data when it may have risen, instead of kept per model in
-- retrain_error_windows and rewritten by every scored statement; a
-- single-row statement takes a short path (with copies of its policy's
-- values in retrain_models); drift_inbox loses its unused key;
-- extending a pending event gets cheaper (domains instead of table CHECKs,
-- details merged in the UPDATE, an inlined lock function).

CREATE DOMAIN retrain_event_reason AS text
    CONSTRAINT reason_is_known CHECK (VALUE IN (
        'error_rate', 'performance', 'accuracy_drop', 'drift_and_accuracy',
        'drift', 'schedule', 'manual'));
CREATE DOMAIN retrain_event_status AS text
    CONSTRAINT status_is_known CHECK (VALUE IN (
        'pending', 'running', 'succeeded', 'failed', 'cancelled'));

-- The old trigger's WHEN and model_status depend on the columns' types: the
-- trigger is replaced below, the view rebuilt with the privileges it had.
DROP TRIGGER retrain_events_reset_error_window ON retrain_events;
DROP FUNCTION retrain_events_after_success();
CREATE TEMP TABLE model_status_grants_0011 ON COMMIT DROP AS
SELECT a.grantee, a.privilege_type, a.is_grantable
FROM pg_class AS c, aclexplode(c.relacl) AS a
WHERE c.oid = 'model_status'::regclass AND a.grantee <> c.relowner;
DROP VIEW model_status;

ALTER TABLE retrain_events
    DROP CONSTRAINT reason_is_known,
    DROP CONSTRAINT status_is_known,
    ALTER COLUMN reason TYPE retrain_event_reason,
    ALTER COLUMN status DROP DEFAULT,
    ALTER COLUMN status TYPE retrain_event_status,
    ALTER COLUMN status SET DEFAULT 'pending',
    ADD COLUMN error_window_after bigint;

CREATE VIEW model_status AS
SELECT m.model_name,
       champion.model_version       AS champion_version,
       champion.accuracy            AS champion_accuracy,
       champion.finished_at         AS champion_trained_at,
       latest_accuracy.accuracy     AS latest_accuracy,
       latest_accuracy.recorded_at  AS latest_accuracy_at,
       latest_drift.drift_score     AS latest_drift_score,
       latest_drift.recorded_at     AS latest_drift_at,
       last_retrain.id              AS last_retrain_event_id,
       last_retrain.status          AS last_retrain_status,
       last_retrain.finished_at     AS last_retrain_at,
       running.id                   AS running_event_id,
       pending.id                   AS pending_event_id,
       pending.reasons              AS pending_reasons,
       pending.run_after            AS pending_run_after
FROM (SELECT model_name FROM retrain_models
      UNION
      SELECT model_name FROM retrain_policies WHERE model_name <> 'default') AS m
LEFT JOIN LATERAL (
    SELECT ev.model_version, ev.accuracy, ev.finished_at
    FROM retrain_events AS ev
    WHERE ev.model_name = m.model_name AND ev.status = 'succeeded' AND ev.promoted
    ORDER BY ev.finished_at DESC LIMIT 1) AS champion ON true
LEFT JOIN LATERAL (
    SELECT mm.accuracy, mm.recorded_at
    FROM model_metrics AS mm
    WHERE mm.model_name = m.model_name AND mm.accuracy IS NOT NULL
    ORDER BY mm.id DESC LIMIT 1) AS latest_accuracy ON true
LEFT JOIN LATERAL (
    SELECT mm.drift_score, mm.recorded_at
    FROM model_metrics AS mm
    WHERE mm.model_name = m.model_name AND mm.drift_score IS NOT NULL
    ORDER BY mm.id DESC LIMIT 1) AS latest_drift ON true
LEFT JOIN LATERAL (
    SELECT ev.id, ev.status, ev.finished_at
    FROM retrain_events AS ev
    WHERE ev.model_name = m.model_name AND ev.status IN ('succeeded', 'failed')
    ORDER BY ev.finished_at DESC LIMIT 1) AS last_retrain ON true
LEFT JOIN LATERAL (
    SELECT ev.id FROM retrain_events AS ev
    WHERE ev.model_name = m.model_name AND ev.status = 'running'
    ORDER BY ev.id LIMIT 1) AS running ON true
LEFT JOIN LATERAL (
    SELECT ev.id, ev.reasons, ev.run_after FROM retrain_events AS ev
    WHERE ev.model_name = m.model_name AND ev.status = 'pending') AS pending ON true;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM model_status_grants_0011 LOOP
        EXECUTE format('GRANT %s ON model_status TO %s%s', g.privilege_type,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END;
$$;

ALTER TABLE retrain_models
    ADD COLUMN error_check_due boolean NOT NULL DEFAULT false,
    ADD COLUMN enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN error_rate_threshold double precision NOT NULL DEFAULT 0.1,
    ADD COLUMN error_window integer NOT NULL DEFAULT 200,
    ADD COLUMN min_error_rows integer NOT NULL DEFAULT 50,
    ADD COLUMN policy_version bigint NOT NULL DEFAULT 0;
-- Moved on by every change of retrain_policies (retrain_policies_changed).
-- Copies of policy values elsewhere carry the version they were read at,
-- in the same snapshot as the values, and are used only while it is the
-- current one: right at any isolation level, and no lock to take.
CREATE TABLE retrain_policy_version (
    one_row  boolean PRIMARY KEY DEFAULT true
        CONSTRAINT one_row_only CHECK (one_row),
    version  bigint NOT NULL DEFAULT 0
);
INSERT INTO retrain_policy_version DEFAULT VALUES;

UPDATE retrain_models AS r
SET enabled = p.enabled, error_rate_threshold = p.error_rate_threshold,
    error_window = p.error_window, min_error_rows = p.min_error_rows
FROM retrain_models AS m
CROSS JOIN LATERAL retrain_policy_for(m.model_name) AS p
WHERE r.model_name = m.model_name;

-- Where each retrained model's window starts: before the oldest row in its
-- kept window; with no window kept, after every row.
UPDATE retrain_events AS e
SET error_window_after = coalesce(
        (SELECT min(u.id) - 1
         FROM retrain_error_windows AS w, unnest(w.row_ids) AS u(id)
         WHERE w.model_name = e.model_name),
        (SELECT coalesce(max(t.id), 0) FROM training_data AS t))
WHERE e.id IN (SELECT max(s.id) FROM retrain_events AS s
               WHERE s.status = 'succeeded' GROUP BY s.model_name);

-- One index less on every insert.
ALTER TABLE drift_inbox DROP COLUMN id;

DROP FUNCTION retrain_check_training_rows(text, bigint, double precision, bigint,
                                          bigint[], boolean[], bigint[], boolean[]);
DROP FUNCTION retrain_advance_error_window(text, integer, bigint[], boolean[],
                                           bigint[], boolean[]);

CREATE FUNCTION retrain_model_lock_key(p_model_name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT hashtextextended('pg-retrain/' || p_model_name, 0)
$$;

CREATE OR REPLACE FUNCTION retrain_lock_model(p_model_name text)
RETURNS void
LANGUAGE sql
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT pg_advisory_xact_lock(retrain_model_lock_key(p_model_name))
$$;

CREATE FUNCTION retrain_try_lock_model(p_model_name text)
RETURNS boolean
LANGUAGE sql
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT pg_try_advisory_xact_lock(retrain_model_lock_key(p_model_name))
$$;

CREATE OR REPLACE FUNCTION record_retrain_event(
    p_model_name text,
    p_observed jsonb,
    p_firings bigint DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_reason     text;
    v_reasons    text[];
    v_manual     boolean;
    v_cooldown   interval;
    v_last_end   timestamptz;
    v_run_after  timestamptz := now();
    v_id         bigint;
    v_all        text[];
BEGIN
    PERFORM retrain_lock_model(p_model_name);

    -- Almost every firing has one reason, read without a query.
    v_reason := jsonb_path_query_first(p_observed, '$.keyvalue().key') #>> '{}';
    IF v_reason IS NOT NULL AND p_observed - v_reason = '{}' THEN
        v_reasons := ARRAY[v_reason];
    ELSE
        -- In SPEC order; an unknown reason sorts last, with no rank.
        v_reasons := ARRAY(SELECT r FROM jsonb_object_keys(p_observed) AS r
                           ORDER BY retrain_reason_rank(r));
        v_reason := NULL;
    END IF;
    IF cardinality(v_reasons) = 0 THEN
        RETURN NULL;
    END IF;
    IF retrain_reason_rank(v_reasons[cardinality(v_reasons)]) IS NULL THEN
        RAISE EXCEPTION 'unknown retrain reason in %', v_reasons
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_manual := 'manual' = ANY (v_reasons);

    -- Most firings extend the pending event: try that first (extending
    -- keeps run_after, so no cooldown lookup is needed). Per reason, details
    -- keep the first and the latest observation and a count. One reason
    -- needs no subquery.
    IF v_reason IS NOT NULL THEN
        UPDATE retrain_events AS e
        SET reasons = CASE WHEN v_reason = ANY (e.reasons) THEN e.reasons
                           ELSE e.reasons || v_reason END,
            details = e.details || jsonb_build_object(v_reason, jsonb_build_object(
                'first', coalesce(e.details -> v_reason -> 'first', p_observed -> v_reason),
                'latest', p_observed -> v_reason,
                'count', coalesce((e.details -> v_reason ->> 'count')::bigint, 0) + p_firings)),
            run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
        WHERE e.model_name = p_model_name AND e.status = 'pending'
        RETURNING e.id, e.reasons INTO v_id, v_all;
    ELSE
        UPDATE retrain_events AS e
        SET reasons = e.reasons || ARRAY(
                SELECT r FROM unnest(v_reasons) WITH ORDINALITY AS u(r, i)
                WHERE r <> ALL (e.reasons) ORDER BY i),
            details = e.details || (
                SELECT jsonb_object_agg(o.key, jsonb_build_object(
                           'first', coalesce(e.details -> o.key -> 'first', o.value),
                           'latest', o.value,
                           'count', coalesce((e.details -> o.key ->> 'count')::bigint, 0)
                                    + p_firings))
                FROM jsonb_each(p_observed) AS o),
            run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
        WHERE e.model_name = p_model_name AND e.status = 'pending'
        RETURNING e.id, e.reasons INTO v_id, v_all;
    END IF;
    IF FOUND THEN
        PERFORM pg_notify('retrain_events', json_build_object(
            'id', v_id, 'model_name', p_model_name, 'reasons', v_all)::text);
        RETURN v_id;
    END IF;

    -- Cooldown: defer after the model's last finished retrain. A manual
    -- request skips it.
    IF NOT v_manual THEN
        v_cooldown := (retrain_policy_for(p_model_name)).cooldown;
        SELECT max(finished_at) INTO v_last_end
        FROM retrain_events
        WHERE model_name = p_model_name AND status IN ('succeeded', 'failed');
        IF v_last_end + v_cooldown > now() THEN
            v_run_after := v_last_end + v_cooldown;
        END IF;
    END IF;

    INSERT INTO retrain_events AS e (model_name, reason, reasons, details, run_after)
    SELECT p_model_name, v_reasons[1], v_reasons,
           jsonb_object_agg(o.key, jsonb_build_object(
               'first', o.value, 'latest', o.value, 'count', p_firings)),
           v_run_after
    FROM jsonb_each(p_observed) AS o
    ON CONFLICT (model_name) WHERE status = 'pending' DO UPDATE
    SET reasons = e.reasons || ARRAY(
            SELECT r FROM unnest(excluded.reasons) WITH ORDINALITY AS u(r, i)
            WHERE r <> ALL (e.reasons) ORDER BY i),
        details = retrain_merge_details(e.details, excluded.details),
        -- Extending keeps run_after, except that a manual request is due now.
        run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
    RETURNING e.id, e.reasons INTO v_id, v_all;

    IF NOT EXISTS (SELECT FROM retrain_models WHERE model_name = p_model_name) THEN
        INSERT INTO retrain_models (model_name) VALUES (p_model_name) ON CONFLICT DO NOTHING;
    END IF;

    PERFORM pg_notify('retrain_events', json_build_object(
        'id', v_id, 'model_name', p_model_name, 'reasons', v_all)::text);
    RETURN v_id;
END;
$$;

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

CREATE OR REPLACE FUNCTION model_metrics_after_write()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    v_policy          retrain_policies;
    v_observed        jsonb := '{}';
    v_previous        double precision;
    v_champion        double precision;
    v_since_id        bigint;
    v_drift           double precision := NEW.drift_score;
    v_drift_row       bigint := NEW.id;
    v_accuracy        double precision := NEW.accuracy;
    v_accuracy_row    bigint := NEW.id;
BEGIN
    IF NOT EXISTS (SELECT FROM retrain_models WHERE model_name = NEW.model_name) THEN
        INSERT INTO retrain_models (model_name) VALUES (NEW.model_name) ON CONFLICT DO NOTHING;
    END IF;
    v_policy := retrain_policy_for(NEW.model_name);
    IF NOT v_policy.enabled THEN
        RETURN NULL;
    END IF;

    IF NEW.accuracy < v_policy.min_accuracy THEN
        v_observed := v_observed || jsonb_build_object('performance', jsonb_build_object(
            'accuracy', NEW.accuracy, 'min_accuracy', v_policy.min_accuracy,
            'metric_id', NEW.id));
    END IF;

    IF NEW.accuracy IS NOT NULL THEN
        IF TG_OP = 'UPDATE' THEN
            v_previous := OLD.accuracy;
        ELSE
            SELECT mm.accuracy INTO v_previous
            FROM model_metrics AS mm
            WHERE mm.model_name = NEW.model_name AND mm.source = NEW.source
              AND mm.id < NEW.id AND mm.accuracy IS NOT NULL
            ORDER BY mm.id DESC
            LIMIT 1;
        END IF;
        SELECT ev.accuracy INTO v_champion
        FROM retrain_events AS ev
        WHERE ev.model_name = NEW.model_name AND ev.status = 'succeeded' AND ev.promoted
        ORDER BY ev.finished_at DESC
        LIMIT 1;

        IF retrain_exceeds(v_previous - NEW.accuracy, v_policy.accuracy_drop_tolerance) THEN
            v_observed := v_observed || jsonb_build_object('accuracy_drop', jsonb_build_object(
                'accuracy', NEW.accuracy, 'previous_accuracy', v_previous,
                'tolerance', v_policy.accuracy_drop_tolerance, 'metric_id', NEW.id));
        ELSIF retrain_exceeds(v_champion - NEW.accuracy, v_policy.accuracy_drop_tolerance) THEN
            v_observed := v_observed || jsonb_build_object('accuracy_drop', jsonb_build_object(
                'accuracy', NEW.accuracy, 'champion_accuracy', v_champion,
                'tolerance', v_policy.accuracy_drop_tolerance, 'metric_id', NEW.id));
        END IF;
    END IF;

    -- A row that carries only one of drift and accuracy takes the other from
    -- the model's newest value since its last successful retrain (whose own
    -- 'retrain' row counts).
    IF (v_drift IS NULL) <> (v_accuracy IS NULL) THEN
        SELECT max(mm.id) INTO v_since_id
        FROM model_metrics AS mm
        WHERE mm.model_name = NEW.model_name AND mm.source = 'retrain' AND mm.id <> NEW.id;

        IF v_drift IS NULL THEN
            SELECT mm.drift_score, mm.id INTO v_drift, v_drift_row
            FROM model_metrics AS mm
            WHERE mm.model_name = NEW.model_name AND mm.id >= coalesce(v_since_id, 0)
              AND mm.id <> NEW.id AND mm.drift_score IS NOT NULL
            ORDER BY mm.id DESC
            LIMIT 1;
        ELSE
            SELECT mm.accuracy, mm.id INTO v_accuracy, v_accuracy_row
            FROM model_metrics AS mm
            WHERE mm.model_name = NEW.model_name AND mm.id >= coalesce(v_since_id, 0)
              AND mm.id <> NEW.id AND mm.accuracy IS NOT NULL
            ORDER BY mm.id DESC
            LIMIT 1;
        END IF;
    END IF;

    IF v_drift > v_policy.drift_threshold AND v_accuracy < v_policy.combined_max_accuracy THEN
        v_observed := v_observed || jsonb_build_object('drift_and_accuracy', jsonb_build_object(
            'drift_score', v_drift, 'drift_threshold', v_policy.drift_threshold,
            'accuracy', v_accuracy, 'combined_max_accuracy', v_policy.combined_max_accuracy,
            'metric_id', NEW.id, 'drift_metric_id', v_drift_row,
            'accuracy_metric_id', v_accuracy_row));
    ELSIF v_policy.drift_alone AND NEW.drift_score > v_policy.drift_threshold THEN
        v_observed := v_observed || jsonb_build_object('drift', jsonb_build_object(
            'drift_score', NEW.drift_score, 'drift_threshold', v_policy.drift_threshold,
            'metric_id', NEW.id));
    END IF;

    IF v_observed <> '{}' THEN
        PERFORM record_retrain_event(NEW.model_name, v_observed);
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION retrain_events_before_success()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'succeeded' THEN
        NEW.error_window_after := coalesce((SELECT max(id) FROM training_data), 0);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER retrain_events_succeeded
    BEFORE INSERT OR UPDATE OF status ON retrain_events
    FOR EACH ROW WHEN (NEW.status = 'succeeded')
    EXECUTE FUNCTION retrain_events_before_success();

CREATE FUNCTION retrain_models_before_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    SELECT p.enabled, p.error_rate_threshold, p.error_window, p.min_error_rows, v.version
    INTO NEW.enabled, NEW.error_rate_threshold, NEW.error_window, NEW.min_error_rows,
         NEW.policy_version
    FROM retrain_policy_for(NEW.model_name) AS p
    CROSS JOIN retrain_policy_version AS v;
    RETURN NEW;
END;
$$;

CREATE TRIGGER retrain_models_policy_copy
    BEFORE INSERT ON retrain_models
    FOR EACH ROW EXECUTE FUNCTION retrain_models_before_insert();

CREATE FUNCTION retrain_policies_after_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE retrain_policy_version SET version = version + 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER retrain_policies_changed
    AFTER INSERT OR DELETE OR TRUNCATE
          OR UPDATE OF model_name, enabled, error_rate_threshold, error_window, min_error_rows
    ON retrain_policies
    FOR EACH STATEMENT EXECUTE FUNCTION retrain_policies_after_change();

DROP TABLE retrain_error_windows;
