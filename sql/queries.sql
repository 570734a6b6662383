-- The worker's queries, as named blocks that worker/queries.py loads.
-- Parameters use psycopg's %(name)s style.

-- claim_event --
-- Takes the next due event: a pending one whose run_after has come, or a
-- running one whose worker stopped heartbeating. SKIP LOCKED lets any number
-- of workers claim side by side; each event goes to exactly one of them.
-- A model with a live running event is not claimed again meanwhile.
UPDATE retrain_events AS e
SET status = 'running',
    worker_id = %(worker_id)s,
    started_at = clock_timestamp(),
    heartbeat_at = clock_timestamp(),
    attempts = e.attempts + 1,
    error = NULL
WHERE e.id = (
    SELECT c.id
    FROM retrain_events AS c
    WHERE ((c.status = 'pending' AND c.run_after <= clock_timestamp())
           OR (c.status = 'running'
               AND c.heartbeat_at < clock_timestamp() - %(stale_after)s::interval))
      -- A pending event waits while its model has a running event (a stale
      -- one is taken over first); retrain_events_one_running_per_model
      -- settles the race of two claims at once.
      AND NOT (c.status = 'pending' AND EXISTS (
          SELECT FROM retrain_events AS r
          WHERE r.model_name = c.model_name AND r.status = 'running'))
    ORDER BY c.run_after, c.id
    FOR UPDATE SKIP LOCKED
    LIMIT 1)
RETURNING e.id, e.model_name, e.reason, e.reasons, e.attempts, e.created_at, e.started_at,
          (SELECT p.max_attempts FROM retrain_policy_for(e.model_name) AS p) AS max_attempts;

-- heartbeat --
UPDATE retrain_events
SET heartbeat_at = clock_timestamp()
WHERE id = %(id)s AND worker_id = %(worker_id)s AND status = 'running';

-- finish_succeeded --
UPDATE retrain_events
SET status = 'succeeded', finished_at = clock_timestamp(), error = NULL,
    mlflow_run_id = %(mlflow_run_id)s, model_version = %(model_version)s,
    accuracy = %(accuracy)s, champion_accuracy = %(champion_accuracy)s,
    promoted = %(promoted)s, rows_used = %(rows_used)s, holdout_rows = %(holdout_rows)s,
    training_window = %(training_window)s, trained_through_id = %(trained_through_id)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND status = 'running';

-- insert_retrain_metric --
INSERT INTO model_metrics (model_name, model_version, accuracy, source)
VALUES (%(model_name)s, %(model_version)s, %(accuracy)s, 'retrain');

-- finish_failed --
UPDATE retrain_events
SET status = 'failed', finished_at = clock_timestamp(), error = %(error)s,
    mlflow_run_id = coalesce(%(mlflow_run_id)s, mlflow_run_id)
WHERE id = %(id)s AND worker_id = %(worker_id)s AND status = 'running';

-- pending_event_of_model --
-- Another pending event of the same model, queued while this one ran.
SELECT id FROM retrain_events
WHERE model_name = %(model_name)s AND status = 'pending' AND id <> %(id)s
FOR UPDATE;

-- release_for_retry --
-- Back to the queue after an error that may pass, or a shutdown. attempts
-- is kept (a shutdown hands back with the attempt not counted).
UPDATE retrain_events
SET status = 'pending', run_after = clock_timestamp() + %(delay)s::interval,
    worker_id = NULL, heartbeat_at = NULL, started_at = NULL,
    attempts = attempts - %(uncount)s, error = %(error)s
WHERE id = %(id)s AND worker_id = %(worker_id)s AND status = 'running';

-- merge_into_pending --
-- The model already has a newer pending event: fold this one's reasons,
-- details, attempts and backoff into it (nothing is dropped, and a failing
-- model is not retried faster or more often because conditions keep firing)
-- and close this one. A manual request stays due.
WITH this AS (
    UPDATE retrain_events
    SET status = 'cancelled', finished_at = clock_timestamp(),
        error = %(error)s || ' (merged into event ' || %(pending_id)s || ')'
    WHERE id = %(id)s AND worker_id = %(worker_id)s AND status = 'running'
    RETURNING reasons, details, attempts)
UPDATE retrain_events AS p
SET reasons = p.reasons || ARRAY(SELECT r FROM unnest(this.reasons) AS r WHERE r <> ALL (p.reasons)),
    details = retrain_merge_details(p.details, this.details),
    attempts = greatest(p.attempts, this.attempts - %(uncount)s),
    run_after = CASE WHEN 'manual' = ANY (p.reasons) THEN p.run_after
                     ELSE greatest(p.run_after, clock_timestamp() + %(delay)s::interval) END
FROM this
WHERE p.id = %(pending_id)s;

-- next_run_after --
-- When the next deferred event becomes due, to sleep until then (events
-- waiting for their model's running event do not count: nothing to wake for).
SELECT min(p.run_after) FROM retrain_events AS p
WHERE p.status = 'pending'
  AND NOT EXISTS (SELECT FROM retrain_events AS r
                  WHERE r.model_name = p.model_name AND r.status = 'running');

-- lock_model --
-- The lock every trigger takes before the model's pending event.
SELECT retrain_lock_model(%(model_name)s);

-- champion_version --
-- The database's champion: the model's latest promoted, succeeded retrain.
SELECT model_version FROM retrain_champion(%(model_name)s);

-- models_with_champion --
SELECT DISTINCT model_name FROM retrain_events WHERE status = 'succeeded' AND promoted;

-- needs_attention --
SELECT needs_attention FROM model_status
WHERE model_name = %(model_name)s AND needs_attention IS NOT NULL;

-- recorded_run --
-- The MLflow run an event's outcome recorded, if any.
SELECT mlflow_run_id FROM retrain_events WHERE id = %(id)s;

-- check_schedules --
SELECT check_retrain_schedules();

-- schedule_check_lock_timeout --
-- A schedule check waits this long for a lock, then gives up its round.
SET LOCAL lock_timeout = '2s';

-- refresh_lock_timeout --
-- A drift refresh waits this long for a lock (training_data held
-- exclusively), then gives up its round.
SET LOCAL lock_timeout = '200ms';

-- request_retrain --
SELECT request_retrain(%(model_name)s);

-- load_training_rows --
-- The model's labelled rows, newest first (training_data_model_id_idx
-- serves it), up to the policy's maximum.
SELECT id, features, label, prediction
FROM training_data
WHERE model_name = %(model_name)s AND label IS NOT NULL
ORDER BY id DESC
LIMIT %(limit)s;

-- policy_for --
SELECT * FROM retrain_policy_for(%(model_name)s);

-- model_known --
SELECT EXISTS (SELECT FROM retrain_models WHERE model_name = %(model_name)s);

-- model_status --
SELECT * FROM model_status ORDER BY model_name;

-- recent_events --
SELECT id, model_name, reasons, status, created_at, finished_at, attempts,
       accuracy, champion_accuracy, promoted, model_version, error
FROM retrain_events
WHERE %(model_name)s::text IS NULL OR model_name = %(model_name)s
ORDER BY id DESC
LIMIT %(limit)s;

-- store_drift_baseline --
SELECT store_drift_baseline(%(model_name)s, %(model_version)s, %(event_id)s,
                            %(baseline_rows)s, %(after_row_id)s, %(features)s);

-- refresh_drift --
-- Brings every model's drift window up to date; returns one row per model
-- whose window changed (reported = a 'monitor' metrics row was appended).
SELECT model_name, window_rows, drift_score, accuracy, reported FROM refresh_drift();

