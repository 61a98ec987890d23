-- A per-session turn lease: two concurrent turns on one session are refused (409), across
-- every API process. The lease expires on its own, so a crashed process never wedges a session.
ALTER TABLE sessions ADD COLUMN turn_lock_until timestamptz;
ALTER TABLE sessions ADD COLUMN turn_lock_owner text;
