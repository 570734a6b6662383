-- Frozen: applied by revision 0016_schedule_check_per_model on downgrade. Never edit.
--
-- Back to revision 0015's check_retrain_schedules().

CREATE OR REPLACE FUNCTION check_retrain_schedules()
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
    END LOOP;
END;
$$;
