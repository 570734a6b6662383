-- Frozen: reverts revision 0011_cheaper_insert_path. Never edit.

DROP TRIGGER retrain_policies_changed ON retrain_policies;
DROP FUNCTION retrain_policies_after_change();
DROP TRIGGER retrain_models_policy_copy ON retrain_models;
DROP FUNCTION retrain_models_before_insert();
DROP TRIGGER retrain_events_succeeded ON retrain_events;
DROP FUNCTION retrain_events_before_success();

-- The kept error windows, rebuilt from training_data, with the privileges
-- retrain_models has (sql/roles.sql grants the worker both alike).
CREATE TABLE retrain_error_windows (
    model_name  text PRIMARY KEY,
    row_ids     bigint[] NOT NULL,
    is_error    boolean[] NOT NULL
);
INSERT INTO retrain_error_windows (model_name, row_ids, is_error)
SELECT r.model_name, w.ids, w.errors
FROM retrain_models AS r
CROSS JOIN LATERAL retrain_policy_for(r.model_name) AS p
CROSS JOIN LATERAL (
    SELECT array_agg(s.id ORDER BY s.id) AS ids,
           array_agg(s.label <> s.prediction ORDER BY s.id) AS errors
    FROM (SELECT t.id, t.label, t.prediction FROM training_data AS t
          WHERE t.model_name = r.model_name
            AND t.label IS NOT NULL AND t.prediction IS NOT NULL
            AND t.id > coalesce((SELECT e.error_window_after FROM retrain_events AS e
                                 WHERE e.model_name = r.model_name AND e.status = 'succeeded'
                                 ORDER BY e.id DESC LIMIT 1), 0)
          ORDER BY t.id DESC
          LIMIT p.error_window) AS s) AS w
WHERE w.ids IS NOT NULL;
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM (SELECT a.grantee, a.privilege_type, a.is_grantable
                    FROM pg_class AS c, aclexplode(c.relacl) AS a
                    WHERE c.oid = 'retrain_models'::regclass AND a.grantee <> c.relowner) AS g LOOP
        EXECUTE format('GRANT %s ON retrain_error_windows TO %s%s', g.privilege_type,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END;
$$;

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

DROP FUNCTION retrain_check_training_rows(text, double precision, integer, integer,
                                          double precision, bigint, bigint, boolean, bigint);
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
    INSERT INTO retrain_models (model_name) VALUES (NEW.model_name) ON CONFLICT DO NOTHING;
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

CREATE OR REPLACE FUNCTION record_retrain_event(
    p_model_name text,
    p_observed jsonb,
    p_firings bigint DEFAULT 1)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_reasons    text[];
    v_details    jsonb;
    v_manual     boolean;
    v_cooldown   interval;
    v_last_end   timestamptz;
    v_run_after  timestamptz := now();
    v_id         bigint;
    v_all        text[];
BEGIN
    PERFORM retrain_lock_model(p_model_name);

    SELECT array_agg(key ORDER BY retrain_reason_rank(key)),
           jsonb_object_agg(key, jsonb_build_object(
               'first', value, 'latest', value, 'count', p_firings))
    INTO v_reasons, v_details
    FROM jsonb_each(p_observed);

    IF v_reasons IS NULL THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT FROM unnest(v_reasons) r WHERE retrain_reason_rank(r) IS NULL) THEN
        RAISE EXCEPTION 'unknown retrain reason in %', v_reasons
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_manual := 'manual' = ANY (v_reasons);

    -- Most firings extend the pending event: try that first (extending
    -- keeps run_after, so no cooldown lookup is needed).
    UPDATE retrain_events AS e
    SET reasons = e.reasons || ARRAY(
            SELECT r FROM unnest(v_reasons) WITH ORDINALITY AS u(r, i)
            WHERE r <> ALL (e.reasons) ORDER BY i),
        details = retrain_merge_details(e.details, v_details),
        run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
    WHERE e.model_name = p_model_name AND e.status = 'pending'
    RETURNING e.id, e.reasons INTO v_id, v_all;
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
    VALUES (p_model_name, v_reasons[1], v_reasons, v_details, v_run_after)
    ON CONFLICT (model_name) WHERE status = 'pending' DO UPDATE
    SET reasons = e.reasons || ARRAY(
            SELECT r FROM unnest(excluded.reasons) WITH ORDINALITY AS u(r, i)
            WHERE r <> ALL (e.reasons) ORDER BY i),
        details = retrain_merge_details(e.details, excluded.details),
        -- Extending keeps run_after, except that a manual request is due now.
        run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
    RETURNING e.id, e.reasons INTO v_id, v_all;

    INSERT INTO retrain_models (model_name) VALUES (p_model_name) ON CONFLICT DO NOTHING;

    PERFORM pg_notify('retrain_events', json_build_object(
        'id', v_id, 'model_name', p_model_name, 'reasons', v_all)::text);
    RETURN v_id;
END;
$$;

CREATE OR REPLACE FUNCTION retrain_lock_model(p_model_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('pg-retrain/' || p_model_name, 0));
END;
$$;

DROP FUNCTION retrain_try_lock_model(text);
DROP FUNCTION retrain_model_lock_key(text);
CREATE TEMP TABLE model_status_grants_0011 ON COMMIT DROP AS
SELECT a.grantee, a.privilege_type, a.is_grantable
FROM pg_class AS c, aclexplode(c.relacl) AS a
WHERE c.oid = 'model_status'::regclass AND a.grantee <> c.relowner;
DROP VIEW model_status;

ALTER TABLE retrain_events
    DROP COLUMN error_window_after,
    ALTER COLUMN reason TYPE text,
    ALTER COLUMN status DROP DEFAULT,
    ALTER COLUMN status TYPE text,
    ALTER COLUMN status SET DEFAULT 'pending',
    ADD CONSTRAINT reason_is_known CHECK (reason IN (
            'error_rate', 'performance', 'accuracy_drop', 'drift_and_accuracy',
            'drift', 'schedule', 'manual')),
    ADD CONSTRAINT status_is_known CHECK (status IN (
            'pending', 'running', 'succeeded', 'failed', 'cancelled'));

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

CREATE FUNCTION retrain_events_after_success()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    DELETE FROM retrain_error_windows WHERE model_name = NEW.model_name;
    RETURN NULL;
END;
$$;

CREATE TRIGGER retrain_events_reset_error_window
    AFTER UPDATE OF status ON retrain_events
    FOR EACH ROW WHEN (NEW.status = 'succeeded' AND OLD.status IS DISTINCT FROM 'succeeded')
    EXECUTE FUNCTION retrain_events_after_success();

DROP DOMAIN retrain_event_status;
DROP DOMAIN retrain_event_reason;

ALTER TABLE drift_inbox ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
ALTER TABLE retrain_models
    DROP COLUMN error_check_due,
    DROP COLUMN enabled,
    DROP COLUMN error_rate_threshold,
    DROP COLUMN error_window,
    DROP COLUMN min_error_rows,
    DROP COLUMN policy_version;
DROP TABLE retrain_policy_version;
