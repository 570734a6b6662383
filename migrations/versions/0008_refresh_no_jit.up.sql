-- Frozen: applied by revision 0008_refresh_no_jit. Never edit; change
-- sql/schema.sql and add a revision instead.

ALTER FUNCTION refresh_drift(text) SET jit = off;
