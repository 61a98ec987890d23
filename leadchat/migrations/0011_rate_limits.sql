-- Issue 17 (several processes): rate-limit token buckets shared by every API process (leadchat.web.SharedRateLimiter).
-- One row per limiter and client: the key is '<limiter>:<sha256 of the IP or session id>' (no address is stored).
-- UNLOGGED: a crash may empty it, which only refills every bucket; it is never replicated or backed up.
CREATE UNLOGGED TABLE rate_limit_buckets (
    key     text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 300),
    tokens  double precision NOT NULL,
    ok      boolean NOT NULL,
    at      timestamptz NOT NULL
);
CREATE INDEX rate_limit_buckets_at_idx ON rate_limit_buckets (at);
