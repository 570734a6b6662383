-- Frozen: applied by revision 0015_default_policy_kept. Never edit.
--
-- TRUNCATE retrain_policies is refused: it fires no row trigger, so it
-- would remove the default row, which DELETE may not.

-- TRUNCATE fires no row trigger, so it would take the default row too.
CREATE FUNCTION retrain_policies_before_truncate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    RAISE EXCEPTION 'the default retrain policy cannot be deleted, so retrain_policies cannot be truncated'
        USING ERRCODE = 'restrict_violation',
              HINT = 'DELETE FROM retrain_policies WHERE model_name <> ''default'' removes the others.';
END;
$$;

CREATE TRIGGER retrain_policies_keep_default
    BEFORE TRUNCATE ON retrain_policies
    FOR EACH STATEMENT EXECUTE FUNCTION retrain_policies_before_truncate();
