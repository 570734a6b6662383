-- Frozen: applied by revision 0014_quick_path_plans. Never edit.
--
-- The insert trigger's quick statement gets plans that do not depend on the
-- size of the first statement a session ran: its row-count check is not
-- correlated, so a COPY or a multi-row INSERT stops there instead of joining
-- every one of its rows to retrain_models (PERFORM runs its query to the
-- end); and the model's row is looked up by a correlated subquery, so a
-- session whose first statement was a COPY does not scan all of
-- retrain_models on every later single-row INSERT.

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
