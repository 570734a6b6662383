-- Frozen: applied by revision 0010_one_running_bounds. Never edit; change
-- sql/schema.sql and add a revision instead.

-- One running event per model: two workers never retrain one model at once.
CREATE UNIQUE INDEX retrain_events_one_running_per_model
    ON retrain_events (model_name) WHERE status = 'running';

ALTER TABLE retrain_policies
    ADD CONSTRAINT schedule_interval_at_most_10_years CHECK (schedule_interval <= '10 years'::interval),
    ADD CONSTRAINT cooldown_at_most_10_years CHECK (cooldown <= '10 years'::interval);
