-- Frozen: reverts revision 0002_training_policy. Never edit.
ALTER TABLE retrain_policies
    DROP COLUMN estimator,
    DROP COLUMN training_window,
    DROP COLUMN max_training_rows,
    DROP COLUMN holdout_fraction;
