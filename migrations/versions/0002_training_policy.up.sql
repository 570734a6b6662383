-- Frozen: applied by revision 0002_training_policy. Never edit; change
-- sql/schema.sql and add a revision instead.

ALTER TABLE retrain_policies
    ADD COLUMN estimator text NOT NULL DEFAULT 'hist_gradient_boosting'
        CONSTRAINT estimator_is_known CHECK (estimator IN (
            'hist_gradient_boosting', 'logistic_regression', 'random_forest')),
    ADD COLUMN training_window integer
        CONSTRAINT training_window_positive CHECK (training_window > 0),
    ADD COLUMN max_training_rows integer NOT NULL DEFAULT 50000
        CONSTRAINT max_training_rows_positive CHECK (max_training_rows > 0),
    ADD COLUMN holdout_fraction double precision NOT NULL DEFAULT 0.2
        CONSTRAINT holdout_fraction_between_0_05_and_0_5
        CHECK (holdout_fraction BETWEEN 0.05 AND 0.5);
