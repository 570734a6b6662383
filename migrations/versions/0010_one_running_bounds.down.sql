-- Frozen: reverts revision 0010_one_running_bounds. Never edit.

DROP INDEX retrain_events_one_running_per_model;
ALTER TABLE retrain_policies
    DROP CONSTRAINT schedule_interval_at_most_10_years,
    DROP CONSTRAINT cooldown_at_most_10_years;
