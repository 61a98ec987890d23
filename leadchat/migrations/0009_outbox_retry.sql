-- Issue 16 (retries that outlive an outage): a channel that failed its immediate attempts (1/3/9 s) goes back on the
-- outbox with exponential backoff until HANDOFF_RETRY_HORIZON_SECONDS after the row was queued; then the row is
-- dead-lettered (a CRITICAL alert, a red banner on the console's Hand-offs page, a one-click replay).
-- channel_status keeps each channel's result ({"slack": {"status": "delivered", ...}, "crm": {...}}) so that a retry
-- never repeats a channel that already succeeded.
ALTER TABLE handoff_outbox ADD COLUMN channel_status jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE handoff_outbox ADD COLUMN retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0);
ALTER TABLE handoff_outbox ADD COLUMN dead_lettered_at timestamptz;
CREATE INDEX handoff_outbox_dead_idx ON handoff_outbox (dead_lettered_at) WHERE dead_lettered_at IS NOT NULL;
