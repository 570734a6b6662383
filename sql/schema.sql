-- pg-retrain: the whole current schema, in one readable file.
--
-- The migrations in migrations/versions/ replay this schema revision by
-- revision from frozen copies; tests/migration/test_migration.py proves the
-- two agree. Change this file together with a new revision, never alone.
--
-- Everything lives in the schema that is first on search_path when this file
-- runs (default public). Functions capture that search_path with
-- "SET search_path FROM CURRENT", so the migration sets it to
-- "<schema>, pg_temp" first: pg_temp last, as SECURITY DEFINER code requires.

-- ---------------------------------------------------------------------------
-- Tables written by users
-- ---------------------------------------------------------------------------

CREATE TABLE training_data (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name  text NOT NULL DEFAULT 'default'
        CONSTRAINT model_name_not_empty CHECK (model_name <> ''),
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

-- Training loads read a model's labelled rows newest first; the schedule
-- counts them. Partial, so unlabelled rows cost the insert path nothing here.
CREATE INDEX training_data_labelled_idx
    ON training_data (model_name, id) WHERE label IS NOT NULL;

CREATE TABLE model_metrics (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name     text NOT NULL
        CONSTRAINT model_name_not_empty CHECK (model_name <> ''),
    model_version  text,
    accuracy       double precision
        CONSTRAINT accuracy_between_0_and_1 CHECK (accuracy BETWEEN 0 AND 1),
    -- ">= 0" alone would accept NaN (it sorts above everything); "< Infinity"
    -- rejects NaN and Infinity both.
    drift_score    double precision
        CONSTRAINT drift_score_at_least_0_and_finite
        CHECK (drift_score >= 0 AND drift_score < 'Infinity'::double precision),
    source         text NOT NULL DEFAULT 'external'
        CONSTRAINT source_is_external_monitor_or_retrain
        CHECK (source IN ('external', 'monitor', 'retrain')),
    recorded_at    timestamptz NOT NULL DEFAULT now()
);

-- "The newest earlier row of the same model and source", "the newest value
-- since the last retrain": both walk this index backwards.
CREATE INDEX model_metrics_model_source_id_idx ON model_metrics (model_name, source, id);
CREATE INDEX model_metrics_model_id_idx ON model_metrics (model_name, id);

-- ---------------------------------------------------------------------------
-- Policies
-- ---------------------------------------------------------------------------

CREATE TABLE retrain_policies (
    model_name               text PRIMARY KEY
        CONSTRAINT model_name_not_empty CHECK (model_name <> ''),
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
    schedule_interval        interval DEFAULT '7 days'
        CONSTRAINT schedule_interval_positive CHECK (schedule_interval > '0'::interval)
        -- Bounded so that timestamps computed from it stay in range.
        CONSTRAINT schedule_interval_at_most_10_years CHECK (schedule_interval <= '10 years'::interval),
    cooldown                 interval NOT NULL DEFAULT '1 hour'
        CONSTRAINT cooldown_not_negative CHECK (cooldown >= '0'::interval)
        CONSTRAINT cooldown_at_most_10_years CHECK (cooldown <= '10 years'::interval),
    min_training_rows        integer NOT NULL DEFAULT 50
        CONSTRAINT min_training_rows_positive CHECK (min_training_rows > 0),
    max_attempts             integer NOT NULL DEFAULT 3
        CONSTRAINT max_attempts_positive CHECK (max_attempts > 0),
    error_window             integer NOT NULL DEFAULT 200
        CONSTRAINT error_window_positive CHECK (error_window > 0),
    min_error_rows           integer NOT NULL DEFAULT 50
        CONSTRAINT min_error_rows_positive CHECK (min_error_rows > 0),
    drift_min_rows           integer NOT NULL DEFAULT 200
        CONSTRAINT drift_min_rows_positive CHECK (drift_min_rows > 0),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    -- What training needs (revision 0002). training_window NULL = adaptive:
    -- the worker picks among recent windows by holdout accuracy.
    estimator                text NOT NULL DEFAULT 'hist_gradient_boosting'
        CONSTRAINT estimator_is_known CHECK (estimator IN (
            'hist_gradient_boosting', 'logistic_regression', 'random_forest')),
    training_window          integer
        CONSTRAINT training_window_positive CHECK (training_window > 0),
    max_training_rows        integer NOT NULL DEFAULT 50000
        CONSTRAINT max_training_rows_positive CHECK (max_training_rows > 0),
    holdout_fraction         double precision NOT NULL DEFAULT 0.2
        CONSTRAINT holdout_fraction_between_0_05_and_0_5
        CHECK (holdout_fraction BETWEEN 0.05 AND 0.5)
);

INSERT INTO retrain_policies (model_name) VALUES ('default');

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

-- ---------------------------------------------------------------------------
-- The queue and audit log
-- ---------------------------------------------------------------------------

-- An event's reason and status are text checked by a domain: a domain's
-- CHECK is prepared once per session, where a table's CHECK is read again by
-- every statement that writes the table (it was a third of the cost of
-- extending a pending event).
CREATE DOMAIN retrain_event_reason AS text
    CONSTRAINT reason_is_known CHECK (VALUE IN (
        'error_rate', 'performance', 'accuracy_drop', 'drift_and_accuracy',
        'drift', 'schedule', 'manual'));
CREATE DOMAIN retrain_event_status AS text
    CONSTRAINT status_is_known CHECK (VALUE IN (
        'pending', 'running', 'succeeded', 'failed', 'cancelled'));

CREATE TABLE retrain_events (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_name         text NOT NULL,
    reason             retrain_event_reason NOT NULL,
    reasons            text[] NOT NULL,
    details            jsonb NOT NULL DEFAULT '{}',
    status             retrain_event_status NOT NULL DEFAULT 'pending',
    created_at         timestamptz NOT NULL DEFAULT now(),
    run_after          timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    heartbeat_at       timestamptz,
    attempts           integer NOT NULL DEFAULT 0,
    worker_id          text,
    error              text,
    mlflow_run_id      text,
    model_version      text,
    accuracy           double precision,
    champion_accuracy  double precision,
    promoted           boolean,
    rows_used          integer,
    -- Set when the event succeeds: the newest training_data id then. The
    -- model's rolling error window counts rows above it (see
    -- retrain_check_training_rows).
    error_window_after bigint
);

-- One pending event per model, enforced by the database: concurrent
-- recorders meet here and INSERT .. ON CONFLICT merges them.
CREATE UNIQUE INDEX retrain_events_one_pending_per_model
    ON retrain_events (model_name) WHERE status = 'pending';
-- One running event per model: two workers never retrain one model at once.
CREATE UNIQUE INDEX retrain_events_one_running_per_model
    ON retrain_events (model_name) WHERE status = 'running';
-- Claiming: due pending events, and running events whose heartbeat is stale.
CREATE INDEX retrain_events_pending_run_after_idx
    ON retrain_events (run_after) WHERE status = 'pending';
CREATE INDEX retrain_events_running_heartbeat_idx
    ON retrain_events (heartbeat_at) WHERE status = 'running';
-- Cooldown, champion and schedule lookups: the model's finished retrains.
CREATE INDEX retrain_events_finished_idx
    ON retrain_events (model_name, finished_at) WHERE status IN ('succeeded', 'failed');
CREATE INDEX retrain_events_model_id_idx ON retrain_events (model_name, id);

-- ---------------------------------------------------------------------------
-- Internal state kept by the triggers
-- ---------------------------------------------------------------------------

-- Every model the system has seen (training rows, metrics, policies), so
-- that schedules and model_status never scan training_data for names;
-- whether the model's next scored row must look at its rolling error window
-- even if it is a correct one (see retrain_check_training_rows); and copies
-- of the four values of its policy that a single-row INSERT needs, so that
-- one index lookup serves it. The copies are used while policy_version is
-- retrain_policy_version's; older ones are renewed by the model's next
-- statement (retrain_policies stays the one to change). Every single-row
-- INSERT reads its model's row here, so it is written rarely: a row updated
-- often leaves versions behind that each read walks past.
CREATE TABLE retrain_models (
    model_name            text PRIMARY KEY,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    error_check_due       boolean NOT NULL DEFAULT false,
    enabled               boolean NOT NULL DEFAULT true,
    error_rate_threshold  double precision NOT NULL DEFAULT 0.1,
    error_window          integer NOT NULL DEFAULT 200,
    min_error_rows        integer NOT NULL DEFAULT 50,
    policy_version        bigint NOT NULL DEFAULT 0
);

-- An upper bound on the errors in a model's rolling window, so that most
-- wrong predictions need not read the window (see
-- retrain_check_training_rows): at its last full read the window held
-- rows_at_least rows, and it has held at most errors_at_most errors then and
-- since (every wrong prediction since is added). Valid while the window
-- starts after the same row (window_after), has the same size, and the
-- model has no row in retrain_window_voids. Written by the READ COMMITTED
-- statements that bring wrong predictions, under the model's lock.
CREATE TABLE retrain_window_bounds (
    model_name      text PRIMARY KEY,
    errors_at_most  integer NOT NULL,
    rows_at_least   integer NOT NULL,
    window_after    bigint NOT NULL,
    window_size     integer NOT NULL
);

-- A model's bound no longer holds: rows may have left its window (a DELETE
-- of rows above its window start, rows moved to another model), or a
-- REPEATABLE READ or SERIALIZABLE writer brought wrong predictions without
-- adding to the bound (it could not see the newest one). Only inserted
-- here, so writers never wait for each other; the model's next full read
-- of its window takes them away. (After loading rows with the triggers off,
-- DELETE FROM retrain_window_bounds.)
CREATE TABLE retrain_window_voids (
    model_name  text NOT NULL
);
CREATE INDEX retrain_window_voids_model_idx ON retrain_window_voids (model_name);

-- Schedule periods already fired, so that concurrent schedule checks record
-- one schedule event per model and period.
CREATE TABLE retrain_schedule_periods (
    model_name    text NOT NULL,
    period_start  timestamptz NOT NULL,
    event_id      bigint,
    PRIMARY KEY (model_name, period_start)
);

-- ---------------------------------------------------------------------------
-- Recording an event
-- ---------------------------------------------------------------------------

-- Writers that may fire something take their model's lock before any
-- per-model row (its pending event, its retrain_models row), so concurrent
-- writers of one model queue instead of deadlocking. Held to the end of the
-- transaction. Finishing a retrain locks only its event's row. Models are
-- registered only after a plain look finds them missing, so a writer never
-- waits on a retrain_models row that another transaction is updating.
CREATE FUNCTION retrain_model_lock_key(p_model_name text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT hashtextextended('pg-retrain/' || p_model_name, 0)
$$;

CREATE FUNCTION retrain_lock_model(p_model_name text)
RETURNS void
LANGUAGE sql
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT pg_advisory_xact_lock(retrain_model_lock_key(p_model_name))
$$;

-- The same lock when it is free, else false at once.
CREATE FUNCTION retrain_try_lock_model(p_model_name text)
RETURNS boolean
LANGUAGE sql
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT pg_try_advisory_xact_lock(retrain_model_lock_key(p_model_name))
$$;

-- The policy that applies to a model: its own row, else the default row.
CREATE FUNCTION retrain_policy_for(p_model_name text)
RETURNS retrain_policies
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_policy retrain_policies;
BEGIN
    -- PL/pgSQL keeps the plan; an SQL function with its own search_path is
    -- planned again on every call.
    SELECT * INTO v_policy
    FROM retrain_policies
    WHERE model_name IN (p_model_name, 'default')
    ORDER BY model_name = p_model_name DESC
    LIMIT 1;
    RETURN v_policy;
END;
$$;

-- Reasons in the order of SPEC section 2: the first one is an event's reason.
CREATE FUNCTION retrain_reason_rank(p_reason text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- No search_path of its own, so that it is inlined: it touches no table.
AS $$
    SELECT array_position(
        ARRAY['error_rate', 'performance', 'accuracy_drop', 'drift_and_accuracy',
              'drift', 'schedule', 'manual'],
        p_reason)
$$;

-- details keeps, per reason, the first and the latest observation and a
-- count, so it stays small however often a condition fires.
CREATE FUNCTION retrain_merge_details(p_old jsonb, p_new jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_merged  jsonb := p_old;
    v_reason  text;
    v_new     jsonb;
BEGIN
    FOR v_reason, v_new IN SELECT key, value FROM jsonb_each(p_new) LOOP
        IF v_merged ? v_reason THEN
            v_merged := v_merged || jsonb_build_object(v_reason, jsonb_build_object(
                'first', v_merged -> v_reason -> 'first',
                'latest', v_new -> 'latest',
                'count', (v_merged -> v_reason ->> 'count')::bigint + (v_new ->> 'count')::bigint));
        ELSE
            v_merged := v_merged || jsonb_build_object(v_reason, v_new);
        END IF;
    END LOOP;
    RETURN v_merged;
END;
$$;

-- Records that conditions fired for a model: a new pending event, or the
-- model's pending event extended. p_observed maps each reason to what was
-- observed (values, thresholds, the id of the row that fired it);
-- p_firings counts how many rows fired it. Notifies on commit.
-- Not SECURITY DEFINER: only the definer-rights triggers and functions
-- below call it, and they already run as the schema owner.
CREATE FUNCTION record_retrain_event(
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

-- Rounds away float noise (0.9 - 0.85 = 0.05000000000000004) so that
-- "more than tolerance" means what a person reading the numbers expects.
CREATE FUNCTION retrain_exceeds(p_value double precision, p_limit double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path FROM CURRENT
AS $$
    SELECT round(p_value::numeric, 12) > round(p_limit::numeric, 12)
$$;

-- ---------------------------------------------------------------------------
-- training_data: error_rate (row value and rolling window)
-- ---------------------------------------------------------------------------

-- A statement brought wrong predictions (or changed scored rows) of a model
-- whose policy is disabled: nothing fires, but the model's bound must not
-- be trusted once the policy is enabled again, by a read that could not see
-- these rows (this transaction may commit after it). A void does that: it
-- becomes visible with the rows. One is enough while one is there, if this
-- statement holds the model's lock (a read takes voids away under it, and
-- then this statement sees that it did); it only tries the lock, since a
-- disabled model's writers need not queue (two that update the same rows
-- would deadlock), and adds one when the lock is busy, or when it cannot
-- see the newest state (REPEATABLE READ, SERIALIZABLE).
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

-- The error_rate decision for one model whose policy is enabled, after a
-- statement added or changed some of its rows: p_max_error_rate is the
-- highest error_rate they report (p_max_error_row_id the first row reporting
-- it, p_over_rows how many are over the threshold). The callers pass the
-- policy's values: they read them with the statement's rows.
--
-- The rolling error rate is read where it lives: the model's newest
-- error_window rows with a label and a prediction, added since its last
-- successful retrain, newest first on training_data_labelled_idx. Nothing is
-- kept per inserted row, so a correct row costs the insert path nothing
-- here. The callers pass p_check_window only when the rate may have risen
-- (a statement brought a wrong prediction, or changed rows already scored)
-- or when the model's error_check_due is set, because a correct row can
-- still make it fire: the window was over the threshold with fewer than
-- min_error_rows rows, or the model's policy changed since the last look.
-- p_newest_row_id is reported in details; p_new_errors is how many wrong
-- predictions the statement added (NULL: not known, for an UPDATE), which
-- lets the upper bound kept in retrain_window_bounds stand in for most
-- reads.
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

-- Statement-level, so a bulk COPY pays a few set-based queries, not a query
-- per row. A single-row statement (an ETL job's INSERTs, a serving path
-- logging predictions) pays this on every row, so it has a path of its own.
-- Most such rows can fire nothing: for them one statement reads the row and
-- its model's retrain_models row (policy copies included, and the policy
-- version); no lock, no write, no window read. (The drift monitor counts
-- rows itself, see drift_horizon_advance.) Each statement here is measured
-- in bench/insert_overhead.py and bench/insert_instructions.py.
CREATE FUNCTION training_data_after_insert()
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
    --
    -- The plan is made once per session, for the size of the statement that
    -- first ran it, and kept. So the model's row is looked up by a
    -- correlated subquery (OFFSET 0 keeps PostgreSQL from turning it into a
    -- join or a hashed subquery): one index lookup for the row, however
    -- large the first statement was. (As a join, a session whose first
    -- statement was a COPY scanned all of retrain_models on every later
    -- single-row INSERT.) The row count is checked first, once: it is not
    -- correlated, and PERFORM runs its query to the end, so a statement of
    -- more rows (a COPY) stops there.
    PERFORM
    FROM inserted_rows AS n
    WHERE EXISTS (SELECT FROM retrain_models AS r
                  WHERE r.model_name = n.model_name
                    AND r.enabled
                    AND (n.error_rate > r.error_rate_threshold) IS NOT TRUE
                    AND CASE WHEN r.error_check_due THEN n.label IS NULL OR n.prediction IS NULL
                             ELSE (n.label <> n.prediction) IS NOT TRUE END
                    AND r.policy_version = (SELECT v.version FROM retrain_policy_version AS v)
                  OFFSET 0)
      AND NOT EXISTS (SELECT FROM inserted_rows AS o OFFSET 1);
    IF FOUND THEN
        RETURN NULL;
    END IF;

    SELECT n.id, n.model_name, n.label, n.prediction, n.error_rate,
           EXISTS (SELECT FROM inserted_rows AS o OFFSET 1),
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

-- Statement-level on UPDATE: a row fires when its error_rate, label or
-- prediction changed. A label that arrives later, or a corrected one, is in
-- the rolling window from then on (it reads the rows as they are now). Rows
-- moved to another model leave their old model's window, as if removed.
CREATE FUNCTION training_data_after_update()
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

-- DELETE: a model whose window may have lost rows (rows above the start of
-- its window, by its last successful retrain as this statement sees it,
-- went) can no longer trust its bound. Nothing fires.
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

-- TRUNCATE (which may restart the ids): no window has rows, every row to
-- come is in its model's window (the windows start after id 0 again, not
-- after an id from before), and every row to come is new to the drift
-- monitor. No writer of training_data runs meanwhile (it is locked
-- exclusively), and a refresh skips what this holds.
CREATE FUNCTION training_data_after_truncate()
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

-- The error window and the drift monitor know rows by id, so an UPDATE may
-- not give a row a new one (UPDATE ... SET id = DEFAULT would).
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

-- AFTER, not BEFORE: PostgreSQL locks every row an UPDATE changes again for
-- a BEFORE row trigger before it looks at the trigger's columns.
CREATE TRIGGER training_data_id_is_fixed
    AFTER UPDATE OF id ON training_data
    FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id)
    EXECUTE FUNCTION training_data_before_id_change();

CREATE TRIGGER training_data_check_inserted
    AFTER INSERT ON training_data
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_insert();

CREATE TRIGGER training_data_check_updated
    AFTER UPDATE ON training_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS updated_rows
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_update();

CREATE TRIGGER training_data_check_deleted
    AFTER DELETE ON training_data
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_delete();

CREATE TRIGGER training_data_truncated
    AFTER TRUNCATE ON training_data
    FOR EACH STATEMENT EXECUTE FUNCTION training_data_after_truncate();

-- ---------------------------------------------------------------------------
-- model_metrics: performance, accuracy_drop, drift_and_accuracy, drift
-- ---------------------------------------------------------------------------

CREATE FUNCTION model_metrics_after_write()
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

-- ---------------------------------------------------------------------------
-- retrain_events and retrain_policies bookkeeping
-- ---------------------------------------------------------------------------

-- A successful retrain restarts the rolling error window: rows above the
-- newest training_data id now count from here on. Kept on the event row
-- itself, so that finishing a retrain touches no other row (and takes no
-- lock a writer of the model could be waiting behind).
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

CREATE FUNCTION retrain_policies_before_write()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.model_name = 'default' THEN
            RAISE EXCEPTION 'the default retrain policy cannot be deleted'
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Change its values instead, or set enabled = false.';
        END IF;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.model_name = 'default' AND NEW.model_name <> 'default' THEN
        RAISE EXCEPTION 'the default retrain policy cannot be renamed'
            USING ERRCODE = 'restrict_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER retrain_policies_guard
    BEFORE INSERT OR UPDATE OR DELETE ON retrain_policies
    FOR EACH ROW EXECUTE FUNCTION retrain_policies_before_write();

-- TRUNCATE fires no row trigger, so it would take the default row too.
CREATE FUNCTION retrain_policies_before_truncate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE EXCEPTION 'the default retrain policy cannot be deleted, so retrain_policies cannot be truncated'
        USING ERRCODE = 'restrict_violation',
              HINT = 'DELETE FROM retrain_policies WHERE model_name <> ''default'' removes the others.';
END;
$$;

CREATE TRIGGER retrain_policies_keep_default
    BEFORE TRUNCATE ON retrain_policies
    FOR EACH STATEMENT EXECUTE FUNCTION retrain_policies_before_truncate();

-- A model's retrain_models row starts with copies of its policy's values,
-- read in one snapshot with the policy version.
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

-- Any change of the policies makes every copy old (see
-- retrain_policy_version). SECURITY DEFINER: whoever may change policies
-- need not be able to write the version.
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

-- ---------------------------------------------------------------------------
-- Manual requests and schedules
-- ---------------------------------------------------------------------------

-- `worker trigger MODEL`: a manual event, even under a disabled policy and
-- inside the cooldown. Unknown models are refused.
CREATE FUNCTION request_retrain(p_model_name text, p_requested_by text DEFAULT session_user)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM retrain_models WHERE model_name = p_model_name)
       AND NOT EXISTS (SELECT FROM retrain_policies
                       WHERE model_name = p_model_name AND model_name <> 'default') THEN
        RAISE EXCEPTION 'unknown model "%": it has no training data, metrics or policy', p_model_name
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN record_retrain_event(p_model_name, jsonb_build_object('manual', jsonb_build_object(
        'requested_by', p_requested_by, 'requested_at', now())));
END;
$$;

-- Records a schedule event for every model whose schedule_interval has
-- passed since its last successful retrain (or that never trained and has
-- min_training_rows labelled rows), unless a retrain of it is running.
-- Safe to call from any number of workers and from pg_cron at once: the
-- period is claimed in retrain_schedule_periods before anything is recorded.
-- Returns the ids of the events recorded or extended.
CREATE FUNCTION check_retrain_schedules()
RETURNS SETOF bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    m               record;
    v_labelled      bigint;
    v_periods       double precision;
    v_period_start  timestamptz;
    v_event_id      bigint;
BEGIN
    FOR m IN
        SELECT r.model_name, p.schedule_interval, p.min_training_rows,
               (SELECT max(ev.finished_at) FROM retrain_events AS ev
                WHERE ev.model_name = r.model_name AND ev.status = 'succeeded') AS last_success
        FROM retrain_models AS r
        CROSS JOIN LATERAL retrain_policy_for(r.model_name) AS p
        WHERE p.enabled AND p.schedule_interval IS NOT NULL
        ORDER BY r.model_name
    LOOP
        -- A model at a time: one whose lock or rows are held (a writer of its
        -- wrong predictions, a lock on training_data) past the caller's
        -- lock_timeout is skipped, with a warning; the others go on.
        BEGIN
            CONTINUE WHEN EXISTS (SELECT FROM retrain_events AS ev
                                  WHERE ev.model_name = m.model_name AND ev.status = 'running');
            IF m.last_success IS NULL THEN
                SELECT count(*) INTO v_labelled
                FROM (SELECT FROM training_data AS t
                      WHERE t.model_name = m.model_name AND t.label IS NOT NULL
                      LIMIT m.min_training_rows) AS s;
                CONTINUE WHEN v_labelled < m.min_training_rows;
                -- Never trained: periods are aligned to the epoch.
                v_periods := floor(extract(epoch FROM now()) / extract(epoch FROM m.schedule_interval));
                v_period_start := 'epoch'::timestamptz + v_periods * m.schedule_interval;
            ELSE
                CONTINUE WHEN now() < m.last_success + m.schedule_interval;
                v_periods := floor(extract(epoch FROM now() - m.last_success)
                                   / extract(epoch FROM m.schedule_interval));
                v_period_start := m.last_success + v_periods * m.schedule_interval;
            END IF;

            INSERT INTO retrain_schedule_periods (model_name, period_start)
            VALUES (m.model_name, v_period_start)
            ON CONFLICT DO NOTHING;
            CONTINUE WHEN NOT FOUND;

            v_event_id := record_retrain_event(m.model_name, jsonb_build_object('schedule', jsonb_build_object(
                'schedule_interval', m.schedule_interval, 'last_success', m.last_success,
                'period_start', v_period_start)));
            UPDATE retrain_schedule_periods SET event_id = v_event_id
            WHERE model_name = m.model_name AND period_start = v_period_start;
            RETURN NEXT v_event_id;
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'schedule check: model % skipped, a lock it needs is held', m.model_name;
        END;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------------------
-- The drift monitor (SPEC section 6)
-- ---------------------------------------------------------------------------
--
-- The insert path writes nothing for the monitor. refresh_drift() counts
-- training_data by id, up to a horizon below which every row that will ever
-- be visible is visible already (drift_horizon_advance): the newest visible
-- id, held back by the transactions writing training_data, each of which
-- can only have rows above the newest id visible before it began to write.
-- So a row whose transaction commits after rows with higher ids is counted
-- once it commits, exactly once; a long-open writer delays the count of the
-- rows that arrived meanwhile, and loses none. A refresh bins just the rows
-- between the last horizon and this one, in one set-based statement, and
-- appends a 'monitor' metrics row: its cost follows the new rows, never the
-- size of training_data.

-- A model's current baseline and the running totals since it was stored.
CREATE TABLE drift_baselines (
    model_name     text PRIMARY KEY,
    model_version  text,
    event_id       bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    baseline_rows  bigint NOT NULL,
    -- The rows committed after the baseline was stored are its recent rows:
    -- those above max_row_id (the counting horizon then) but for the ones
    -- visible then (before_ids); so are labels that reach them later.
    max_row_id     bigint NOT NULL,
    recent_rows    bigint NOT NULL DEFAULT 0,
    labelled_rows  bigint NOT NULL DEFAULT 0,
    correct_rows   bigint NOT NULL DEFAULT 0,
    refreshed_at   timestamptz,
    before_ids     int8multirange NOT NULL DEFAULT '{}',
    before_max     bigint NOT NULL DEFAULT 0,     -- the highest id in before_ids
    -- New rows or labels were counted that no 'monitor' row has reported yet.
    report_due     boolean NOT NULL DEFAULT false
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

-- How far the monitor has counted (see drift_horizon_advance): every row
-- with an id up to counted_id that will ever be visible has been counted, for
-- the models with a baseline. newest_id: the newest visible id at the last
-- look, the bound for writers that appear after it.
CREATE TABLE drift_horizon (
    one_row     boolean PRIMARY KEY DEFAULT true
        CONSTRAINT one_row_only CHECK (one_row),
    counted_id  bigint NOT NULL DEFAULT 0,
    newest_id   bigint NOT NULL DEFAULT 0,
    counted_at  timestamptz
);
INSERT INTO drift_horizon DEFAULT VALUES;

-- The transactions that held a write lock on training_data at the last
-- look, and an id that none of their rows is at or below. A writer that
-- stays open holds the horizon at its lo_id: `seen_since` says how long.
CREATE TABLE drift_writers (
    vxid        text PRIMARY KEY,
    pid         integer,
    lo_id       bigint NOT NULL,
    seen_since  timestamptz NOT NULL DEFAULT now()
);

-- Labels and predictions changed by UPDATE, per statement and model: the
-- rows, and by how much each changed the labelled and the correct counts.
-- The next refresh adds the changes of rows it had counted already; a row
-- it counts later is counted as it is then.
CREATE TABLE drift_label_changes (
    model_name  text NOT NULL,
    row_ids     bigint[] NOT NULL,
    scored      integer[] NOT NULL,
    correct     integer[] NOT NULL
);

-- Advances the bookkeeping of the counting horizon and returns it: every
-- training_data row with an id at or below it that will ever be visible is
-- visible to statements that start after this returns. Callers count in a
-- later statement of the same READ COMMITTED transaction, and take the
-- greater of this and drift_horizon.counted_id (deletes can lower it).
-- Holds drift_horizon's row to the end of the transaction: one counter at a
-- time. With p_wait false it returns NULL at once, counting nothing, while
-- another transaction holds training_data exclusively (DDL, VACUUM FULL).
--
-- Why it holds: ids come from training_data's identity sequence in the
-- order they are handed out (CACHE 1, increasing, no CYCLE: checked), and
-- the horizon is never above the sequence's last value, so an id the
-- sequence has still to hand out is always above it. Every id at or below
-- the newest visible one was handed out before this look. A transaction
-- that handed one out and has not finished has held a write lock on
-- training_data since before it did (statements lock their tables before
-- they run), so pg_locks lists it; and one that pg_locks did not list at
-- the previous look took its lock after it, so all its ids are above the
-- newest id visible then. A prepared transaction may come back under
-- another name after a restart: it holds the horizon where it stands.
-- Rows given ids of their own (OVERRIDING SYSTEM VALUE, a COPY of id) are
-- counted when the horizon passes them, if it has not already.
--
-- SECURITY DEFINER: it reads the identity sequence, which the worker's role
-- need not be granted.
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

-- Stores a fresh baseline (the worker calls it in the transaction that
-- records a successful retrain). p_features: [{feature, kind, edges,
-- categories, bins: [{bin, label, share}]}]. The rows visible now belong to
-- the old distribution; the ones that commit later are the new baseline's
-- recent rows. Above the counting horizon the visible ids are kept as runs
-- (few: only rows still to commit, or rolled back, break them).
CREATE FUNCTION store_drift_baseline(
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

-- A model's drift now, and its 'monitor' metrics row if one is due (rows or
-- labels were counted since its last report) and drift_min_rows rows arrived
-- since its baseline; then the report is no longer due. The row fires the
-- checks of model_metrics, so it is written holding the model's lock, and
-- the baseline's row: with p_wait false only if both are free at once (a
-- writer of the model holds its lock to its commit), else the report stays
-- due and reported is false.
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

-- Brings the recent counts of every model with a baseline up to date with
-- the rows (and label changes) that arrived since the last refresh, and
-- appends a 'monitor' metrics row for each model that saw some, once
-- drift_min_rows rows arrived since its baseline. That row fires the checks
-- of model_metrics (drift_and_accuracy, drift, performance), so it is
-- written only when the model's lock is free at once (a writer of the
-- model holds it to its commit): otherwise report_due keeps it for the next
-- refresh, and no refresh waits behind one busy model. While training_data
-- is locked exclusively, nothing is counted this time. Returns one row per
-- model that saw new rows or labels, or was reported (only p_model_name's,
-- if given). Safe to call from any number of workers at once (they take
-- turns). Runs with the caller's rights: the worker's role (sql/roles.sql)
-- may write these tables.
CREATE FUNCTION refresh_drift(p_model_name text DEFAULT NULL)
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

-- ---------------------------------------------------------------------------
-- Views for people
-- ---------------------------------------------------------------------------

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

-- ---------------------------------------------------------------------------
-- Privileges
-- ---------------------------------------------------------------------------

-- Functions are executable by PUBLIC by default. The definer-rights entry
-- points that record events are for the worker and operators only
-- (sql/roles.sql grants them); the trigger functions run only as triggers.
REVOKE EXECUTE ON FUNCTION request_retrain(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION check_retrain_schedules() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION record_retrain_event(text, jsonb, bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION drift_horizon_advance(boolean) FROM PUBLIC;
