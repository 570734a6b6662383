-- Frozen: applied by revision 0015_default_policy_kept on downgrade. Never edit.

DROP TRIGGER retrain_policies_keep_default ON retrain_policies;

DROP FUNCTION retrain_policies_before_truncate();
