-- Frozen: reverts revision 0001_initial. Never edit; add a revision instead.
DROP VIEW model_status;
-- Returns the retrain_policies row type, so it goes before the table.
DROP FUNCTION retrain_policy_for(text);
-- Dropping the tables drops their triggers and indexes.
DROP TABLE training_data, model_metrics, retrain_events, retrain_policies,
           retrain_models, retrain_error_windows, retrain_schedule_periods;
DROP FUNCTION check_retrain_schedules();
DROP FUNCTION request_retrain(text, text);
DROP FUNCTION retrain_policies_before_write();
DROP FUNCTION retrain_events_after_success();
DROP FUNCTION model_metrics_after_write();
DROP FUNCTION training_data_after_update();
DROP FUNCTION training_data_after_insert();
DROP FUNCTION retrain_check_training_rows(text, bigint, double precision, bigint, bigint[], boolean[], bigint[], boolean[]);
DROP FUNCTION retrain_advance_error_window(text, integer, bigint[], boolean[], bigint[], boolean[]);
DROP FUNCTION retrain_exceeds(double precision, double precision);
DROP FUNCTION record_retrain_event(text, jsonb, bigint);
DROP FUNCTION retrain_merge_details(jsonb, jsonb);
DROP FUNCTION retrain_reason_rank(text);
