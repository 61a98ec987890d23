-- Issue 16 (durable before promised): a turn commits the visitor's message — and a hand-off — before its reply
-- streams, and records the reply after. Between the two, the turn's pending marker holds its turn index and the state
-- so far; a marker whose turn no longer holds its lease (an advisory lock on the turn's connection) is a lost reply:
-- the next turn of the session, or a process's start-up, records it as lost and restores the state.
CREATE TABLE turn_pending (
    session_id  text PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    turn_index  integer NOT NULL CHECK (turn_index >= 0),
    state       jsonb NOT NULL,                    -- the state so far; the final state once replied
    replied     boolean NOT NULL DEFAULT false,    -- the reply is recorded; the checkpoint may not be written yet
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The row lease of migration 0002 (turn_lock_until, turn_lock_owner) is no longer written: a live one left by a process
-- of the previous version is still honoured (409) until it expires.
COMMENT ON COLUMN sessions.turn_lock_until IS 'legacy row lease (before 0008); leases are advisory locks now';
