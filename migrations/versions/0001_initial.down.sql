-- Frozen: reverts revision 0001_initial. Never edit; add a revision instead.
-- Views and functions first (they depend on the tables and the row type of
-- retrain_policies); dropping a table drops its triggers and indexes.
DROP VIEW model_status, feature_drift, retrain_models;
DROP FUNCTION refresh_drift(text);
DROP FUNCTION store_drift_baseline(text, text, bigint, integer, bigint, jsonb);
DROP FUNCTION drift_bin(text, double precision[], text[], jsonb);
DROP FUNCTION check_retrain_schedules();
DROP FUNCTION request_retrain(text, text);
DROP TABLE drift_bins, drift_features, drift_baselines;
DROP TABLE training_data, model_metrics;
DROP FUNCTION model_metrics_after_write();
DROP FUNCTION training_data_after_truncate();
DROP FUNCTION training_data_after_update();
DROP FUNCTION training_data_after_insert();
DROP FUNCTION retrain_check_training_rows(text, double precision, bigint, bigint);
DROP FUNCTION retrain_champion(text);
DROP FUNCTION record_retrain_event(text, jsonb);
DROP FUNCTION retrain_merge_details(jsonb, jsonb);
DROP FUNCTION retrain_due_at(text);
DROP FUNCTION retrain_futile_streak(text);
DROP FUNCTION retrain_lock_model(text);
DROP TABLE retrain_schedule_periods, retrain_events;
DROP DOMAIN retrain_event_reason, retrain_event_status;
DROP FUNCTION retrain_policy_for(text);
DROP TABLE retrain_policies;
DROP FUNCTION retrain_policies_before_write();
DROP DOMAIN retrain_model_name;
