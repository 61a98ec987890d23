-- Issue 17 (traces): the W3C traceparent of the turn that queued a hand-off or an update, so that the relay's delivery
-- span links to it (leadchat.telemetry). NULL while tracing is off.
ALTER TABLE handoff_outbox ADD COLUMN traceparent text CHECK (length(traceparent) <= 128);
