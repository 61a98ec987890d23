-- Issue 16 (calendar abuse): a hold is only for a slot that was offered to its session (GET /api/availability with
-- the session_id records what it answered), at most 2 live holds per session and LEADCHAT_LIVE_HOLDS_PER_IP per client.
CREATE TABLE slot_offers (
    session_id  text NOT NULL CHECK (length(session_id) BETWEEN 1 AND 128),
    slot_id     text NOT NULL CHECK (length(slot_id) BETWEEN 1 AND 100),
    offered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, slot_id)
);
CREATE INDEX slot_offers_offered_idx ON slot_offers (offered_at);

-- sha256 of the client IP that took a hold (not the address itself): the per-IP cap counts live holds by it.
ALTER TABLE calendar_bookings ADD COLUMN client_hash bytea;
CREATE INDEX calendar_bookings_live_client_idx ON calendar_bookings (client_hash, expires_at) WHERE status = 'held';

-- Cancel tokens are never kept in plain text: stored replays lose theirs (a replay issues a fresh token).
UPDATE idempotency_keys SET response_body = response_body - 'cancel_token' WHERE response_body ? 'cancel_token';
