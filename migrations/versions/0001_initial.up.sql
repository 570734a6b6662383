-- Frozen: sql/schema.sql as released in pg-retrain 0.1.0 (revision 0001_initial).
-- Never edit; add a revision instead.

-- pg-retrain: the whole current schema, in one readable file.
--
-- Revision 0001 applies a frozen copy of it; later revisions hold only what
-- they change, and tests/migration proves that replaying them gives exactly
-- this file. Change it together with a new revision, never alone.
--
-- Everything lives in the schema first on search_path (default public);
-- functions pin it ("SET search_path FROM CURRENT", the migration sets
-- "<schema>, pg_temp"), but for small SQL helpers PostgreSQL inlines.

-- == Tables written by users ================================================

-- A notification holds < 8000 bytes, MLflow names <= 256 characters. A domain's
-- CHECK is prepared once per session, a table's on every INSERT (25k instructions).
CREATE DOMAIN retrain_model_name AS text
    CONSTRAINT model_name_1_to_200_characters CHECK (length(VALUE) BETWEEN 1 AND 200);

CREATE TABLE training_data (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name  retrain_model_name NOT NULL DEFAULT 'default',
    features    jsonb NOT NULL
        -- A flat JSON object: feature name -> number, string, boolean or null.
        CONSTRAINT features_must_be_flat_json_object CHECK (
            jsonb_typeof(features) = 'object'
            AND NOT jsonb_path_exists(features, 'strict $.* ? (@.type() == "object" || @.type() == "array")')
        ),
    label       text,
    prediction  text,
    -- NaN sorts above every number in PostgreSQL, so BETWEEN rejects it too.
    error_rate  double precision
        CONSTRAINT error_rate_between_0_and_1 CHECK (error_rate BETWEEN 0 AND 1),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A model's rows newest first: training loads, the rolling error window, the
-- drift window, and the list of known models all walk this index.
CREATE INDEX training_data_model_id_idx ON training_data (model_name, id);

CREATE TABLE model_metrics (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name     retrain_model_name NOT NULL,
    model_version  text,
    accuracy       double precision
        CONSTRAINT accuracy_between_0_and_1 CHECK (accuracy BETWEEN 0 AND 1),
    -- ">= 0" alone would accept NaN, which sorts above everything.
    drift_score    double precision
        CONSTRAINT drift_score_at_least_0_and_finite
        CHECK (drift_score >= 0 AND drift_score < 'Infinity'::double precision),
    source         text NOT NULL DEFAULT 'external'
        CONSTRAINT source_is_external_monitor_or_retrain
        CHECK (source IN ('external', 'monitor', 'retrain')),
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- The model's newest earlier row (of a source) walks this index backwards.
CREATE INDEX model_metrics_model_source_id_idx ON model_metrics (model_name, source, id);

-- == Policies ===============================================================

CREATE TABLE retrain_policies (
    model_name               retrain_model_name PRIMARY KEY,
    enabled                  boolean NOT NULL DEFAULT true,
    error_rate_threshold     double precision NOT NULL DEFAULT 0.1
        CONSTRAINT error_rate_threshold_between_0_and_1 CHECK (error_rate_threshold BETWEEN 0 AND 1),
    min_accuracy             double precision NOT NULL DEFAULT 0.8
        CONSTRAINT min_accuracy_between_0_and_1 CHECK (min_accuracy BETWEEN 0 AND 1),
    accuracy_drop_tolerance  double precision NOT NULL DEFAULT 0.05
        CONSTRAINT accuracy_drop_tolerance_between_0_and_1 CHECK (accuracy_drop_tolerance BETWEEN 0 AND 1),
    drift_threshold          double precision NOT NULL DEFAULT 0.25
        CONSTRAINT drift_threshold_at_least_0_and_finite
        CHECK (drift_threshold >= 0 AND drift_threshold < 'Infinity'::double precision),
    combined_max_accuracy    double precision NOT NULL DEFAULT 0.9
        CONSTRAINT combined_max_accuracy_between_0_and_1 CHECK (combined_max_accuracy BETWEEN 0 AND 1),
    drift_alone              boolean NOT NULL DEFAULT false,
    -- Intervals are checked in seconds, as used (a year of months: 365.25 days);
    -- at most 10 years (315,576,000 s) so that timestamps stay in range.
    schedule_interval        interval DEFAULT '7 days'
        CONSTRAINT schedule_interval_positive CHECK (extract(epoch FROM schedule_interval) > 0)
        CONSTRAINT schedule_interval_at_most_10_years CHECK (extract(epoch FROM schedule_interval) <= 315576000),
    cooldown                 interval NOT NULL DEFAULT '1 hour'
        CONSTRAINT cooldown_not_negative CHECK (extract(epoch FROM cooldown) >= 0)
        CONSTRAINT cooldown_at_most_10_years CHECK (extract(epoch FROM cooldown) <= 315576000),
    -- Also schedule once the rows since the last retrain are this x its rows.
    schedule_growth          integer DEFAULT 7
        CONSTRAINT schedule_growth_positive CHECK (schedule_growth > 0),
    min_training_rows        integer NOT NULL DEFAULT 50
        CONSTRAINT min_training_rows_positive CHECK (min_training_rows > 0),
    max_attempts             integer NOT NULL DEFAULT 3
        CONSTRAINT max_attempts_positive CHECK (max_attempts > 0),
    error_window             integer NOT NULL DEFAULT 200
        CONSTRAINT error_window_positive CHECK (error_window > 0),
    min_error_rows           integer NOT NULL DEFAULT 50
        CONSTRAINT min_error_rows_positive CHECK (min_error_rows > 0),
    -- The rolling error rate fires above the larger of error_rate_threshold
    -- and the champion's own holdout error plus this (NULL: the threshold).
    error_rate_margin        double precision DEFAULT 0.05
        CONSTRAINT error_rate_margin_between_0_and_1 CHECK (error_rate_margin BETWEEN 0 AND 1),
    drift_min_rows           integer NOT NULL DEFAULT 200
        CONSTRAINT drift_min_rows_positive CHECK (drift_min_rows > 0),
    drift_window             integer NOT NULL DEFAULT 1000
        CONSTRAINT drift_window_positive CHECK (drift_window > 0),
    -- After this many automatic retrains in a row without promotion, automatic
    -- events wait futile_backoff, doubling with each further one (at most 7 days).
    futile_retrains          integer NOT NULL DEFAULT 3
        CONSTRAINT futile_retrains_positive CHECK (futile_retrains > 0),
    futile_backoff           interval NOT NULL DEFAULT '1 hour'
        CONSTRAINT futile_backoff_not_negative CHECK (extract(epoch FROM futile_backoff) >= 0)
        CONSTRAINT futile_backoff_at_most_10_years CHECK (extract(epoch FROM futile_backoff) <= 315576000),
    -- What training needs; training_window NULL: the worker picks it.
    estimator                text NOT NULL DEFAULT 'auto'
        CONSTRAINT estimator_is_known CHECK (estimator IN (
            'auto', 'hist_gradient_boosting', 'logistic_regression', 'random_forest')),
    training_window          integer
        CONSTRAINT training_window_positive CHECK (training_window > 0),
    max_training_rows        integer NOT NULL DEFAULT 50000
        CONSTRAINT max_training_rows_positive CHECK (max_training_rows > 0),
    holdout_fraction         double precision NOT NULL DEFAULT 0.2
        CONSTRAINT holdout_fraction_between_0_05_and_0_5
        CHECK (holdout_fraction BETWEEN 0.05 AND 0.5),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

INSERT INTO retrain_policies (model_name) VALUES ('default');

-- The policy of a model: its own row, else the default row (inlined).
CREATE FUNCTION retrain_policy_for(p_model_name text)
RETURNS SETOF retrain_policies
LANGUAGE sql STABLE
AS $$
    SELECT * FROM retrain_policies
    WHERE model_name = coalesce((SELECT o.model_name FROM retrain_policies AS o
                                 WHERE o.model_name = p_model_name), 'default')
$$;

-- The default row cannot go: every model without a row of its own uses it.
CREATE FUNCTION retrain_policies_before_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'the default retrain policy cannot be deleted, so retrain_policies cannot be truncated'
            USING ERRCODE = 'restrict_violation',
                  HINT = 'DELETE FROM retrain_policies WHERE model_name <> ''default'' removes the others.';
    END IF;
    IF OLD.model_name = 'default' AND (TG_OP = 'DELETE' OR NEW.model_name <> 'default') THEN
        RAISE EXCEPTION 'the default retrain policy cannot be deleted or renamed'
            USING ERRCODE = 'restrict_violation',
                  HINT = 'Change its values instead, or set enabled = false.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER retrain_policies_guard
    BEFORE INSERT OR UPDATE OR DELETE ON retrain_policies
    FOR EACH ROW EXECUTE FUNCTION retrain_policies_before_write();

CREATE TRIGGER retrain_policies_keep_default
    BEFORE TRUNCATE ON retrain_policies
    FOR EACH STATEMENT EXECUTE FUNCTION retrain_policies_before_write();

-- == The queue and audit log ================================================

-- Domains, whose CHECKs are prepared once per session (a third of the cost of
-- extending an event, as table CHECKs).
CREATE DOMAIN retrain_event_reason AS text
    CONSTRAINT reason_is_known CHECK (VALUE IN (
        'error_rate', 'performance', 'accuracy_drop', 'drift_and_accuracy',
        'drift', 'schedule', 'manual'));
CREATE DOMAIN retrain_event_status AS text
    CONSTRAINT status_is_known CHECK (VALUE IN (
        'pending', 'running', 'succeeded', 'failed', 'cancelled'));

CREATE TABLE retrain_events (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name          text NOT NULL,
    reason              retrain_event_reason NOT NULL,
    reasons             text[] NOT NULL,
    details             jsonb NOT NULL DEFAULT '{}',
    status              retrain_event_status NOT NULL DEFAULT 'pending',
    created_at          timestamptz NOT NULL DEFAULT now(),
    run_after           timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    heartbeat_at        timestamptz,
    attempts            integer NOT NULL DEFAULT 0,
    worker_id           text,
    error               text,
    mlflow_run_id       text,
    model_version       text,
    accuracy            double precision,   -- the challenger's, on the holdout
    champion_accuracy   double precision,   -- the champion's, on the same holdout
    promoted            boolean,
    rows_used           integer,            -- rows the registered model learned from
    holdout_rows        integer,
    training_window     integer,            -- rows in the window the worker chose
    trained_through_id  bigint              -- the newest row it saw: windows start after it
);

-- One pending and one running event per model at most, enforced here; due
-- and stale events for claiming; finished retrains for every other lookup.
CREATE UNIQUE INDEX retrain_events_one_pending_per_model
    ON retrain_events (model_name) WHERE status = 'pending';
CREATE UNIQUE INDEX retrain_events_one_running_per_model
    ON retrain_events (model_name) WHERE status = 'running';
CREATE INDEX retrain_events_pending_run_after_idx
    ON retrain_events (run_after) WHERE status = 'pending';
CREATE INDEX retrain_events_running_heartbeat_idx
    ON retrain_events (heartbeat_at) WHERE status = 'running';
CREATE INDEX retrain_events_finished_idx
    ON retrain_events (model_name, finished_at) WHERE status IN ('succeeded', 'failed');

-- Schedule periods fired: concurrent checks record one event per period.
CREATE TABLE retrain_schedule_periods (
    model_name    text NOT NULL,
    period_start  timestamptz NOT NULL,
    PRIMARY KEY (model_name, period_start)
);

-- == Recording an event =====================================================

-- Whoever records or releases a model's event takes this lock first, held to
-- the end of the transaction: writers of one model take turns, and each one
-- reads the rolling error window with the rows of those before it.
CREATE FUNCTION retrain_lock_model(p_model_name text)
RETURNS void
LANGUAGE sql
AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('pg-retrain/' || p_model_name, 0))
$$;

-- Automatic retrains that succeeded without promotion since the model's last
-- promotion or manual request, and when the last one ended.
CREATE FUNCTION retrain_futile_streak(p_model_name text,
                                      OUT retrains integer, OUT last_finished timestamptz)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT count(*)::integer, max(e.finished_at)
    FROM retrain_events AS e
    WHERE e.model_name = p_model_name AND e.status = 'succeeded'
      AND NOT e.promoted AND NOT 'manual' = ANY (e.reasons)
      AND e.finished_at > coalesce(
          (SELECT max(r.finished_at) FROM retrain_events AS r
           WHERE r.model_name = p_model_name AND r.status IN ('succeeded', 'failed')
             AND (r.promoted OR 'manual' = ANY (r.reasons))),
          '-infinity')
$$;

-- When a new automatic event may run: after the cooldown since the model's
-- last finished retrain, and after the futile-retrain backoff.
CREATE FUNCTION retrain_due_at(p_model_name text)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT greatest(
        now(),
        (SELECT max(e.finished_at) FROM retrain_events AS e
         WHERE e.model_name = p_model_name AND e.status IN ('succeeded', 'failed')) + p.cooldown,
        -- In seconds, so that no futile_backoff overflows the interval.
        CASE WHEN f.retrains >= p.futile_retrains THEN
            f.last_finished + make_interval(secs => least(
                extract(epoch FROM p.futile_backoff) * 2 ^ least(f.retrains - p.futile_retrains, 30),
                extract(epoch FROM interval '7 days'))) END)
    FROM retrain_policy_for(p_model_name) AS p,
         retrain_futile_streak(p_model_name) AS f
$$;

-- details keeps, per reason, the first and the latest observation and a
-- count, so it stays small however often a condition fires. p_new maps a
-- reason to an observation, or (when merging two events) to such a triple.
CREATE FUNCTION retrain_merge_details(p_old jsonb, p_new jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN p_old || coalesce((
        SELECT jsonb_object_agg(n.key, jsonb_build_object(
            'first', coalesce(p_old -> n.key -> 'first', n.value -> 'first', n.value),
            'latest', coalesce(n.value -> 'latest', n.value),
            'count', coalesce((p_old -> n.key ->> 'count')::bigint, 0)
                     + coalesce((n.value ->> 'count')::bigint, 1)))
        FROM jsonb_each(p_new) AS n), '{}');
END;
$$;

-- Records that conditions fired for a model: a new pending event, or the
-- pending one extended. p_observed maps each reason to what was observed
-- (values, thresholds, the row that fired it). Notifies on commit.
CREATE FUNCTION record_retrain_event(p_model_name text, p_observed jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_reasons  text[];
    v_manual   boolean;
    v_id       bigint;
    v_all      text[];
BEGIN
    -- In the order of the reasons table: the first is the event's reason.
    v_reasons := ARRAY(SELECT r FROM jsonb_object_keys(p_observed) AS r
                       ORDER BY array_position(ARRAY['error_rate', 'performance', 'accuracy_drop',
                           'drift_and_accuracy', 'drift', 'schedule', 'manual'], r));
    v_manual := 'manual' = ANY (v_reasons);
    PERFORM retrain_lock_model(p_model_name);

    -- Most firings extend the pending event: it keeps its run_after, except
    -- that a manual request is due now.
    UPDATE retrain_events AS e
    SET reasons = e.reasons || ARRAY(SELECT r FROM unnest(v_reasons) AS r
                                     WHERE r <> ALL (e.reasons)),
        details = retrain_merge_details(e.details, p_observed),
        run_after = CASE WHEN v_manual THEN least(e.run_after, now()) ELSE e.run_after END
    WHERE e.model_name = p_model_name AND e.status = 'pending'
    RETURNING e.id, e.reasons INTO v_id, v_all;
    -- Else a new one, which may have to wait (cooldown, backoff). Whoever
    -- makes an event pending holds the model's lock, so none can appear
    -- meanwhile; retrain_events_one_pending_per_model guards the rest.
    IF NOT FOUND THEN
        INSERT INTO retrain_events (model_name, reason, reasons, details, run_after)
        VALUES (p_model_name, v_reasons[1], v_reasons, retrain_merge_details('{}', p_observed),
                CASE WHEN v_manual THEN now() ELSE retrain_due_at(p_model_name) END)
        RETURNING id, reasons INTO v_id, v_all;
    END IF;

    PERFORM pg_notify('retrain_events', json_build_object(
        'id', v_id, 'model_name', p_model_name, 'reasons', v_all)::text);
    RETURN v_id;
END;
$$;

-- == training_data: error_rate ==============================================

-- The champion: the model's latest promoted, succeeded retrain.
CREATE FUNCTION retrain_champion(p_model_name text)
RETURNS SETOF retrain_events
LANGUAGE sql STABLE
AS $$
    SELECT * FROM retrain_events
    WHERE model_name = p_model_name AND status = 'succeeded' AND promoted
    ORDER BY finished_at DESC
    LIMIT 1
$$;

-- The error_rate decision for a model after a statement added or changed
-- rows of it: p_max_error_rate is their highest error_rate (p_max_error_row_id
-- its row), p_newest_wrong_id the newest of them with a wrong prediction. Only
-- then is the rolling window read: a right prediction cannot raise its rate.
CREATE FUNCTION retrain_check_training_rows(
    p_model_name text,
    p_max_error_rate double precision,
    p_max_error_row_id bigint,
    p_newest_wrong_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    p          retrain_policies;
    v_after    bigint;
    v_error    double precision;   -- the champion's own holdout error
    v_limit    double precision;
    v_rows     integer;
    v_wrong    integer;
    v_fired    jsonb := '{}';
BEGIN
    SELECT * INTO p FROM retrain_policy_for(p_model_name);
    IF NOT p.enabled THEN
        RETURN;
    END IF;
    IF p_max_error_rate > p.error_rate_threshold THEN
        v_fired := jsonb_build_object('error_rate', p_max_error_rate,
                                      'threshold', p.error_rate_threshold,
                                      'row_id', p_max_error_row_id);
    END IF;

    IF p_newest_wrong_id IS NOT NULL THEN
        -- The lock first, then the window in statements of their own: they
        -- see the rows of every writer of the model that held it before. It
        -- starts after the newest row the last successful retrain learned from.
        PERFORM retrain_lock_model(p_model_name);
        SELECT coalesce(max(e.trained_through_id), 0) INTO v_after
        FROM (SELECT trained_through_id FROM retrain_events
              WHERE model_name = p_model_name AND status = 'succeeded'
              ORDER BY finished_at DESC LIMIT 1) AS e;
        SELECT count(*), count(*) FILTER (WHERE w.label <> w.prediction) INTO v_rows, v_wrong
        FROM (SELECT t.label, t.prediction
              FROM training_data AS t
              WHERE t.model_name = p_model_name
                AND t.label IS NOT NULL AND t.prediction IS NOT NULL
                -- A row comparison only the model's index serves: a generic
                -- plan would otherwise walk the primary key backwards.
                AND (t.model_name, t.id) > (p_model_name, v_after)
              ORDER BY t.model_name DESC, t.id DESC
              LIMIT p.error_window) AS w;
        SELECT 1 - c.accuracy INTO v_error FROM retrain_champion(p_model_name) AS c;
        -- greatest() skips NULL: no champion, or no margin.
        v_limit := greatest(p.error_rate_threshold, v_error + p.error_rate_margin);
        -- Rounded, as accuracy_drop is: 34/200 is not above 0.12 + 0.05.
        IF v_rows >= p.min_error_rows
           AND round((v_wrong::double precision / v_rows)::numeric, 12) > round(v_limit::numeric, 12) THEN
            v_fired := v_fired || jsonb_build_object(
                'rolling_error_rate', v_wrong::double precision / v_rows,
                'window_rows', v_rows,
                'rolling_threshold', v_limit,
                'champion_error', v_error,
                'newest_row_id', p_newest_wrong_id);
        END IF;
    END IF;
    IF v_fired <> '{}' THEN
        PERFORM record_retrain_event(p_model_name, jsonb_build_object('error_rate', v_fired));
    END IF;
END;
$$;

-- Statement-level: a bulk COPY pays a few set-based queries, not a query per
-- row (bench/insert_overhead.py and insert_instructions.py measure it).
CREATE FUNCTION training_data_after_insert()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
-- JIT compiling for a 200k-row transition table costs more than it saves.
SET jit = off
AS $$
DECLARE
    m  record;
BEGIN
    -- Most statements of an ETL job's INSERTs are one row that can fire
    -- nothing, and cost this one statement. The row count is checked first:
    -- uncorrelated, it is evaluated once, so a COPY stops there.
    PERFORM FROM inserted_rows AS n
    WHERE NOT EXISTS (SELECT FROM inserted_rows OFFSET 1)
      AND (n.label <> n.prediction
           OR n.error_rate > (SELECT p.error_rate_threshold
                              FROM retrain_policy_for(n.model_name) AS p)) IS NOT TRUE;
    IF FOUND THEN
        RETURN NULL;
    END IF;

    -- Any other statement: per model in one pass, its highest error_rate (and
    -- first row with it: the max of [error_rate, -id]), its newest wrong row.
    FOR m IN
        SELECT n.model_name, max(n.id) FILTER (WHERE n.label <> n.prediction) AS newest_wrong,
               max(ARRAY[n.error_rate, -n.id]) FILTER (WHERE n.error_rate IS NOT NULL) AS top
        FROM inserted_rows AS n
        GROUP BY n.model_name
        -- One lock order for every statement, whatever models it writes.
        ORDER BY n.model_name
    LOOP
        CONTINUE WHEN m.top IS NULL AND m.newest_wrong IS NULL;
        PERFORM retrain_check_training_rows(m.model_name, m.top[1], -m.top[2]::bigint,
                                            m.newest_wrong);
    END LOOP;
    RETURN NULL;
END;
$$;

-- The same for the rows an UPDATE changed (a label, a prediction, an error_rate).
CREATE FUNCTION training_data_after_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
SET jit = off
AS $$
DECLARE
    m  record;
BEGIN
    FOR m IN
        SELECT n.model_name, max(n.id) FILTER (WHERE n.label <> n.prediction) AS newest_wrong,
               max(ARRAY[n.error_rate, -n.id]) FILTER (WHERE n.error_rate IS NOT NULL) AS top
        FROM updated_rows AS n JOIN old_rows AS o USING (id)
        WHERE (n.model_name, n.label, n.prediction, n.error_rate)
              IS DISTINCT FROM (o.model_name, o.label, o.prediction, o.error_rate)
        GROUP BY n.model_name
        ORDER BY n.model_name
    LOOP
        CONTINUE WHEN m.top IS NULL AND m.newest_wrong IS NULL;
        PERFORM retrain_check_training_rows(m.model_name, m.top[1], -m.top[2]::bigint,
                                            m.newest_wrong);
    END LOOP;
    RETURN NULL;
END;
$$;

-- TRUNCATE ... RESTART IDENTITY starts the ids again: the rows to come are
-- after every retrain's rows and every drift baseline.
CREATE FUNCTION training_data_after_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE retrain_events SET trained_through_id = 0 WHERE trained_through_id <> 0;
    UPDATE drift_baselines SET after_row_id = 0 WHERE after_row_id <> 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER training_data_check_inserted
    AFTER INSERT ON training_data
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_insert();

CREATE TRIGGER training_data_check_updated
    AFTER UPDATE ON training_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS updated_rows
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_update();

CREATE TRIGGER training_data_truncated
    AFTER TRUNCATE ON training_data
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_truncate();

-- == model_metrics: performance, accuracy_drop, drift_and_accuracy, drift ===

CREATE FUNCTION model_metrics_after_write()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    p               retrain_policies;
    v_fired         jsonb := '{}';
    v_previous      double precision;
    v_champion      double precision;
    v_other         model_metrics;
    v_drift         double precision := NEW.drift_score;
    v_drift_row     bigint := NEW.id;
    v_accuracy      double precision := NEW.accuracy;
    v_accuracy_row  bigint := NEW.id;
BEGIN
    SELECT * INTO p FROM retrain_policy_for(NEW.model_name);
    IF NOT p.enabled THEN
        RETURN NULL;
    END IF;

    IF NEW.accuracy < p.min_accuracy THEN
        v_fired := v_fired || jsonb_build_object('performance', jsonb_build_object(
            'accuracy', NEW.accuracy, 'min_accuracy', p.min_accuracy, 'metric_id', NEW.id));
    END IF;

    -- accuracy_drop: against the previous value (OLD on UPDATE, else the newest
    -- earlier row of the model and source), or else the champion's accuracy.
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
        SELECT c.accuracy INTO v_champion FROM retrain_champion(NEW.model_name) AS c;
        -- Rounded: float noise (0.9 - 0.85 = 0.05000000000000004) is no drop.
        IF round((v_previous - NEW.accuracy)::numeric, 12) > round(p.accuracy_drop_tolerance::numeric, 12) THEN
            v_fired := v_fired || jsonb_build_object('accuracy_drop', jsonb_build_object(
                'accuracy', NEW.accuracy, 'previous_accuracy', v_previous,
                'tolerance', p.accuracy_drop_tolerance, 'metric_id', NEW.id));
        ELSIF round((v_champion - NEW.accuracy)::numeric, 12) > round(p.accuracy_drop_tolerance::numeric, 12) THEN
            v_fired := v_fired || jsonb_build_object('accuracy_drop', jsonb_build_object(
                'accuracy', NEW.accuracy, 'champion_accuracy', v_champion,
                'tolerance', p.accuracy_drop_tolerance, 'metric_id', NEW.id));
        END IF;
    END IF;

    -- A row that carries only one of drift and accuracy takes the other from
    -- the model's newest row that has it, since its last successful retrain
    -- (whose own 'retrain' row counts).
    IF (v_drift IS NULL) <> (v_accuracy IS NULL) THEN
        SELECT mm.* INTO v_other
        FROM model_metrics AS mm
        WHERE mm.model_name = NEW.model_name AND mm.id <> NEW.id
          AND (CASE WHEN v_drift IS NULL THEN mm.drift_score ELSE mm.accuracy END) IS NOT NULL
          AND mm.id >= coalesce((SELECT max(r.id) FROM model_metrics AS r
                                 WHERE r.model_name = NEW.model_name AND r.source = 'retrain'
                                   AND r.id <> NEW.id), 0)
        ORDER BY mm.id DESC
        LIMIT 1;
        IF v_drift IS NULL THEN
            v_drift := v_other.drift_score;
            v_drift_row := v_other.id;
        ELSE
            v_accuracy := v_other.accuracy;
            v_accuracy_row := v_other.id;
        END IF;
    END IF;

    IF v_drift > p.drift_threshold AND v_accuracy < p.combined_max_accuracy THEN
        v_fired := v_fired || jsonb_build_object('drift_and_accuracy', jsonb_build_object(
            'drift_score', v_drift, 'drift_threshold', p.drift_threshold,
            'accuracy', v_accuracy, 'combined_max_accuracy', p.combined_max_accuracy,
            'metric_id', NEW.id, 'drift_metric_id', v_drift_row,
            'accuracy_metric_id', v_accuracy_row));
    ELSIF p.drift_alone AND NEW.drift_score > p.drift_threshold THEN
        v_fired := v_fired || jsonb_build_object('drift', jsonb_build_object(
            'drift_score', NEW.drift_score, 'drift_threshold', p.drift_threshold,
            'metric_id', NEW.id));
    END IF;

    IF v_fired <> '{}' THEN
        PERFORM record_retrain_event(NEW.model_name, v_fired);
    END IF;
    RETURN NULL;
END;
$$;

-- A retrain's own result never starts another.
CREATE TRIGGER model_metrics_check_inserted
    AFTER INSERT ON model_metrics
    FOR EACH ROW WHEN (NEW.source <> 'retrain')
    EXECUTE FUNCTION model_metrics_after_write();

CREATE TRIGGER model_metrics_check_updated
    AFTER UPDATE ON model_metrics
    FOR EACH ROW WHEN (NEW.source <> 'retrain'
                       AND (OLD.accuracy IS DISTINCT FROM NEW.accuracy
                            OR OLD.drift_score IS DISTINCT FROM NEW.drift_score))
    EXECUTE FUNCTION model_metrics_after_write();

-- == Known models, manual requests and schedules ============================

-- Every model with training rows, metrics or a policy of its own, found by
-- skipping through the indexes (a probe per model, no scan).
CREATE VIEW retrain_models AS
WITH RECURSIVE trained(model_name) AS (
    SELECT min(model_name) FROM training_data
    UNION ALL
    SELECT (SELECT min(t.model_name) FROM training_data AS t WHERE t.model_name > trained.model_name)
    FROM trained WHERE trained.model_name IS NOT NULL
), measured(model_name) AS (
    SELECT min(model_name) FROM model_metrics
    UNION ALL
    SELECT (SELECT min(m.model_name) FROM model_metrics AS m WHERE m.model_name > measured.model_name)
    FROM measured WHERE measured.model_name IS NOT NULL
)
SELECT model_name FROM trained WHERE model_name IS NOT NULL
UNION SELECT model_name FROM measured WHERE model_name IS NOT NULL
UNION SELECT model_name FROM retrain_policies WHERE model_name <> 'default';

-- `worker trigger MODEL`: a manual event, even under a disabled policy and
-- inside the cooldown. Unknown models are refused.
CREATE FUNCTION request_retrain(p_model_name text, p_requested_by text DEFAULT session_user)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM retrain_policies
                   WHERE model_name = p_model_name AND model_name <> 'default')
       AND NOT EXISTS (SELECT FROM retrain_events WHERE model_name = p_model_name)
       AND NOT EXISTS (SELECT FROM model_metrics WHERE model_name = p_model_name)
       AND NOT EXISTS (SELECT FROM training_data WHERE model_name = p_model_name) THEN
        RAISE EXCEPTION 'unknown model "%": it has no training data, metrics or policy', p_model_name
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN record_retrain_event(p_model_name, jsonb_build_object('manual', jsonb_build_object(
        'requested_by', p_requested_by, 'requested_at', now())));
END;
$$;

-- Records a schedule event for each model that is due (unless a retrain of
-- it runs): schedule_interval passed since its last successful retrain (never
-- trained: with min_training_rows labelled rows, periods from the epoch), or
-- it grew: its labelled rows since then number schedule_growth times the rows
-- that retrain learned from (at most max_training_rows). Safe from any number
-- of callers at once: each period (growth: one per retrain) is claimed first.
CREATE FUNCTION check_retrain_schedules()
RETURNS SETOF bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    m         record;
    v_period  timestamptz;
BEGIN
    FOR m IN
        SELECT r.model_name, p.min_training_rows, p.schedule_interval, s.finished_at,
               least(p.schedule_growth::bigint * s.rows_used, p.max_training_rows) AS grown,
               coalesce(s.trained_through_id, 0) AS after,
               -- In seconds, so that no schedule_interval overflows the interval.
               a.anchor + make_interval(secs => a.seconds * floor(
                   extract(epoch FROM now() - a.anchor) / a.seconds)) AS period_start
        FROM retrain_models AS r
        CROSS JOIN LATERAL retrain_policy_for(r.model_name) AS p
        LEFT JOIN LATERAL (SELECT e.finished_at, e.rows_used, e.trained_through_id
                           FROM retrain_events AS e
                           WHERE e.model_name = r.model_name AND e.status = 'succeeded'
                           ORDER BY e.finished_at DESC LIMIT 1) AS s ON true
        CROSS JOIN LATERAL (SELECT coalesce(s.finished_at, 'epoch') AS anchor,
                                   extract(epoch FROM p.schedule_interval) AS seconds) AS a
        WHERE p.enabled AND NOT EXISTS (SELECT FROM retrain_events AS e
                                        WHERE e.model_name = r.model_name AND e.status = 'running')
        ORDER BY r.model_name
    LOOP
        IF m.finished_at IS NULL THEN
            CONTINUE WHEN m.schedule_interval IS NULL OR (
                SELECT count(*) FROM (SELECT FROM training_data AS t
                                      WHERE t.model_name = m.model_name AND t.label IS NOT NULL
                                      LIMIT m.min_training_rows) AS l) < m.min_training_rows;
            v_period := m.period_start;
        ELSIF now() >= m.finished_at + m.schedule_interval THEN
            v_period := m.period_start;
        -- Grown: ids are shared by all models, so the newest id bounds the
        -- count cheaply; the count reads at most `grown` rows.
        ELSIF (SELECT max(t.id) FROM training_data AS t WHERE t.model_name = m.model_name)
                  - m.after >= m.grown
              AND (SELECT count(*) FROM (SELECT FROM training_data AS t
                                         WHERE t.model_name = m.model_name AND t.id > m.after
                                           AND t.label IS NOT NULL LIMIT m.grown) AS l) >= m.grown THEN
            v_period := m.finished_at;
        ELSE
            CONTINUE;
        END IF;
        -- A model at a time: one whose lock a writer holds past the caller's
        -- lock_timeout is skipped, with a warning; the others go on.
        BEGIN
            INSERT INTO retrain_schedule_periods (model_name, period_start)
            VALUES (m.model_name, v_period)
            ON CONFLICT DO NOTHING;
            CONTINUE WHEN NOT FOUND;
            RETURN NEXT record_retrain_event(m.model_name, jsonb_build_object(
                'schedule', jsonb_build_object('schedule_interval', m.schedule_interval,
                                               'last_success', m.finished_at,
                                               'period_start', v_period,
                                               'grown_to_rows', CASE WHEN v_period = m.finished_at
                                                                     THEN m.grown END)));
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'schedule check: model % skipped, a lock it needs is held', m.model_name;
        END;
    END LOOP;
END;
$$;

-- == The drift monitor ======================================================
--
-- Each successful retrain stores a baseline: per feature, bins and the share
-- of the baseline rows in each. The recent rows are the model's newest
-- drift_window rows after after_row_id (the newest row the retrain learned
-- from): a sliding window, read again when it changed, so its cost follows
-- the window, never the size of training_data, and inserts write nothing.

CREATE TABLE drift_baselines (
    model_name     text PRIMARY KEY,
    model_version  text,
    event_id       bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    baseline_rows  integer NOT NULL,
    after_row_id   bigint NOT NULL,
    -- The window as of the last refresh, and what tells that it changed.
    recent_rows    integer NOT NULL DEFAULT 0,
    labelled_rows  integer NOT NULL DEFAULT 0,
    correct_rows   integer NOT NULL DEFAULT 0,
    id_sum         numeric NOT NULL DEFAULT 0,
    refreshed_at   timestamptz
);

-- Per feature, how a value finds its bin (drift_bin).
CREATE TABLE drift_features (
    model_name  text NOT NULL REFERENCES drift_baselines ON DELETE CASCADE,
    feature     text NOT NULL,
    kind        text NOT NULL
        CONSTRAINT kind_is_numeric_or_categorical CHECK (kind IN ('numeric', 'categorical')),
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
    recent_count    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (model_name, feature, bin),
    FOREIGN KEY (model_name, feature) REFERENCES drift_features ON DELETE CASCADE
);

-- A value's bin, as worker/drift.py bins the baseline: -1 missing (absent,
-- null, not a number in a numeric feature); numeric: the number of edges <=
-- value; categorical: the position of its text in categories, 0 for others.
CREATE FUNCTION drift_bin(p_kind text, p_edges double precision[], p_categories text[],
                          p_value jsonb)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_value IS NULL OR jsonb_typeof(p_value) = 'null' THEN -1
        WHEN p_kind = 'numeric' THEN
            -- Through numeric: jsonb holds numbers (1e400, 1e-400) that
            -- double precision cannot.
            CASE WHEN jsonb_typeof(p_value) <> 'number' THEN -1
                 WHEN p_value::numeric > 1e308 THEN cardinality(p_edges)
                 WHEN p_value::numeric < -1e308 THEN 0
                 WHEN abs(p_value::numeric) < 1e-300 THEN width_bucket(0::double precision, p_edges)
                 ELSE width_bucket(p_value::numeric::double precision, p_edges) END
        ELSE coalesce(array_position(p_categories, p_value #>> '{}'), 0)
    END
$$;

-- Stored with a successful retrain's outcome. p_features: [{feature, kind,
-- edges, categories, bins: [{bin, label, share}]}].
CREATE FUNCTION store_drift_baseline(
    p_model_name text, p_model_version text, p_event_id bigint,
    p_baseline_rows integer, p_after_row_id bigint, p_features jsonb)
RETURNS void
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    DELETE FROM drift_baselines WHERE model_name = p_model_name;
    INSERT INTO drift_baselines (model_name, model_version, event_id, baseline_rows, after_row_id)
    VALUES (p_model_name, p_model_version, p_event_id, p_baseline_rows, p_after_row_id);
    INSERT INTO drift_features (model_name, feature, kind, edges, categories)
    SELECT p_model_name, f ->> 'feature', f ->> 'kind',
           ARRAY(SELECT jsonb_array_elements_text(f -> 'edges'))::double precision[],
           ARRAY(SELECT jsonb_array_elements_text(f -> 'categories'))
    FROM jsonb_array_elements(p_features) AS f;
    INSERT INTO drift_bins (model_name, feature, bin, label, baseline_share)
    SELECT p_model_name, f ->> 'feature', (b ->> 'bin')::integer, b ->> 'label',
           (b ->> 'share')::double precision
    FROM jsonb_array_elements(p_features) AS f, jsonb_array_elements(f -> 'bins') AS b;
$$;

-- Population Stability Index per feature between the baseline's shares and
-- the window's, with a floor of 0.0001 for empty bins; and the bins, for psql.
CREATE VIEW feature_drift AS
SELECT f.model_name, f.feature, f.kind,
       CASE WHEN d.recent_rows > 0 THEN s.psi END AS psi,
       d.recent_rows, d.baseline_rows, s.bins
FROM drift_features AS f
JOIN drift_baselines AS d USING (model_name)
CROSS JOIN LATERAL (
    SELECT sum((x.r - x.p) * ln(x.r / x.p)) AS psi,
           jsonb_agg(jsonb_build_object(
               'bin', x.bin, 'label', x.label,
               'baseline_share', round(x.baseline_share::numeric, 4),
               'recent_share', round(x.recent_share::numeric, 4)) ORDER BY x.bin) AS bins
    FROM (SELECT b.bin, b.label, b.baseline_share,
                 b.recent_count::double precision / nullif(d.recent_rows, 0) AS recent_share,
                 greatest(b.baseline_share, 0.0001) AS p,
                 greatest(coalesce(b.recent_count::double precision / nullif(d.recent_rows, 0), 0),
                          0.0001) AS r
          FROM drift_bins AS b
          WHERE b.model_name = f.model_name AND b.feature = f.feature) AS x
) AS s;

-- Brings the drift monitor of every model (or p_model_name's) up to date;
-- a row per model whose window changed (new rows, late commits, labels that
-- arrived). Once the window holds drift_min_rows rows it is reported as a
-- 'monitor' row of model_metrics, which fires the checks and so needs the
-- model's lock: while a writer holds it, the next refresh reports. A model
-- another refresh is at is skipped; one that fails is a warning. Safe from
-- any number of workers and pg_cron at once; runs with the caller's rights.
CREATE FUNCTION refresh_drift(p_model_name text DEFAULT NULL)
RETURNS TABLE (model_name text, window_rows integer, drift_score double precision,
               accuracy double precision, reported boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    d      drift_baselines;
    p      retrain_policies;
    v_now  drift_baselines;
BEGIN
    FOR d IN
        SELECT * FROM drift_baselines AS b
        WHERE p_model_name IS NULL OR b.model_name = p_model_name
        ORDER BY b.model_name
        FOR UPDATE SKIP LOCKED
    LOOP
      BEGIN
        SELECT * INTO p FROM retrain_policy_for(d.model_name);
        SELECT count(*), count(*) FILTER (WHERE w.label IS NOT NULL AND w.prediction IS NOT NULL),
               count(*) FILTER (WHERE w.label = w.prediction), coalesce(sum(w.id), 0)
        INTO v_now.recent_rows, v_now.labelled_rows, v_now.correct_rows, v_now.id_sum
        FROM (SELECT t.id, t.label, t.prediction FROM training_data AS t
              WHERE t.model_name = d.model_name
                AND (t.model_name, t.id) > (d.model_name, d.after_row_id)
              ORDER BY t.model_name DESC, t.id DESC
              LIMIT p.drift_window) AS w;
        CONTINUE WHEN (v_now.recent_rows, v_now.labelled_rows, v_now.correct_rows, v_now.id_sum)
                      = (d.recent_rows, d.labelled_rows, d.correct_rows, d.id_sum);
        model_name := d.model_name;
        window_rows := v_now.recent_rows;
        accuracy := v_now.correct_rows::double precision / nullif(v_now.labelled_rows, 0);
        drift_score := NULL;
        reported := window_rows >= least(p.drift_min_rows, p.drift_window);
        -- The lock retrain_lock_model takes, if it is free now.
        IF reported AND NOT pg_try_advisory_xact_lock(
                hashtextextended('pg-retrain/' || d.model_name, 0)) THEN
            reported := false;
            RETURN NEXT;
            CONTINUE;
        END IF;

        WITH recent AS MATERIALIZED (
            SELECT t.features FROM training_data AS t
            WHERE t.model_name = d.model_name
              AND (t.model_name, t.id) > (d.model_name, d.after_row_id)
            ORDER BY t.model_name DESC, t.id DESC
            LIMIT p.drift_window
        ), counted AS MATERIALIZED (
            SELECT f.feature, drift_bin(f.kind, f.edges, f.categories, r.features -> f.feature)
                       AS bin, count(*) AS n
            FROM recent AS r CROSS JOIN drift_features AS f
            WHERE f.model_name = d.model_name
            GROUP BY 1, 2)
        UPDATE drift_bins AS b
        SET recent_count = coalesce((SELECT c.n FROM counted AS c
                                     WHERE c.feature = b.feature AND c.bin = b.bin), 0)
        WHERE b.model_name = d.model_name;
        UPDATE drift_baselines AS b
        SET recent_rows = v_now.recent_rows, labelled_rows = v_now.labelled_rows,
            correct_rows = v_now.correct_rows, id_sum = v_now.id_sum, refreshed_at = now()
        WHERE b.model_name = d.model_name;

        SELECT max(fd.psi) INTO drift_score FROM feature_drift AS fd
        WHERE fd.model_name = d.model_name;
        IF reported THEN
            INSERT INTO model_metrics (model_name, model_version, accuracy, drift_score, source)
            VALUES (d.model_name, d.model_version, accuracy, drift_score, 'monitor');
        END IF;
        RETURN NEXT;
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'drift monitor: the refresh of model % failed: %', d.model_name, SQLERRM;
      END;
    END LOOP;
END;
$$;

-- == Views for people =======================================================

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
       pending.run_after            AS pending_run_after,
       futile.retrains              AS futile_retrains,
       CASE WHEN futile.retrains >= p.futile_retrains THEN format(
           '%s automatic retrains in a row were not promoted (the champion stays better): '
           'automatic retrains wait until %s; check the data and the policy',
           futile.retrains, to_char(retrain_due_at(m.model_name), 'YYYY-MM-DD HH24:MI TZ'))
       END                          AS needs_attention
FROM retrain_models AS m
CROSS JOIN LATERAL retrain_policy_for(m.model_name) AS p
CROSS JOIN LATERAL retrain_futile_streak(m.model_name) AS futile
LEFT JOIN LATERAL retrain_champion(m.model_name) AS champion ON true
LEFT JOIN LATERAL (
    SELECT mm.accuracy, mm.recorded_at FROM model_metrics AS mm
    WHERE mm.model_name = m.model_name AND mm.accuracy IS NOT NULL
    ORDER BY mm.id DESC LIMIT 1) AS latest_accuracy ON true
LEFT JOIN LATERAL (
    SELECT mm.drift_score, mm.recorded_at FROM model_metrics AS mm
    WHERE mm.model_name = m.model_name AND mm.drift_score IS NOT NULL
    ORDER BY mm.id DESC LIMIT 1) AS latest_drift ON true
LEFT JOIN LATERAL (
    SELECT e.id, e.status, e.finished_at FROM retrain_events AS e
    WHERE e.model_name = m.model_name AND e.status IN ('succeeded', 'failed')
    ORDER BY e.finished_at DESC LIMIT 1) AS last_retrain ON true
LEFT JOIN LATERAL (
    SELECT e.id FROM retrain_events AS e
    WHERE e.model_name = m.model_name AND e.status = 'running') AS running ON true
LEFT JOIN LATERAL (
    SELECT e.id, e.reasons, e.run_after FROM retrain_events AS e
    WHERE e.model_name = m.model_name AND e.status = 'pending') AS pending ON true;

-- == Privileges =============================================================

-- The definer-rights entry points are for the worker and operators only
-- (sql/roles.sql grants them); the trigger functions run only as triggers.
REVOKE EXECUTE ON FUNCTION request_retrain(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION check_retrain_schedules() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION record_retrain_event(text, jsonb) FROM PUBLIC;
