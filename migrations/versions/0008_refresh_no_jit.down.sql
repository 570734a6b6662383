-- Frozen: reverts revision 0008_refresh_no_jit. Never edit.

ALTER FUNCTION refresh_drift(text) RESET jit;
