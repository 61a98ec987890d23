-- Calendar handoff (nbs/61_booking.ipynb): tentative holds and bookings in one table, guarded against
-- double booking by an exclusion constraint; Idempotency-Key results; post-booking work (invites, CRM).
CREATE EXTENSION IF NOT EXISTS btree_gist;   -- also in 0001; `rep WITH =` in a GiST index needs it

-- A hold is a row in status 'held' with an expiry; confirming it turns the same row into the booking.
-- Active rows ('held', 'confirming', 'confirmed') of one rep can never overlap: the database refuses it.
CREATE TABLE calendar_bookings (
    id                uuid PRIMARY KEY,
    rep               text NOT NULL CHECK (rep ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    meeting_type      text NOT NULL CHECK (meeting_type ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    start_at          timestamptz NOT NULL,
    end_at            timestamptz NOT NULL,
    buffer_before     interval NOT NULL DEFAULT '0' CHECK (buffer_before >= '0'),
    buffer_after      interval NOT NULL DEFAULT '0' CHECK (buffer_after >= '0'),
    status            text NOT NULL
                      CHECK (status IN ('held', 'confirming', 'confirmed', 'released', 'expired', 'failed', 'cancelled')),
    expires_at        timestamptz,              -- a hold's expiry; a confirmation's lease
    hold_token_hash   bytea NOT NULL,           -- sha256 of the booking token handed out with the hold
    cancel_token_hash bytea,                    -- sha256 of the cancellation token handed out with the booking
    session_id        text,
    visitor_name      text,
    visitor_email     text,
    visitor_tz        text,
    notes             text,
    provider          text NOT NULL,            -- the rep's calendar kind: caldav, google, microsoft, ics, none
    provider_event_id text,
    idempotency_key   text,
    failure           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    confirmed_at      timestamptz,
    ended_at          timestamptz,              -- released, expired, failed or cancelled
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT calendar_bookings_ordered CHECK (end_at > start_at),
    CONSTRAINT calendar_bookings_lapse CHECK (status NOT IN ('held', 'confirming') OR expires_at IS NOT NULL),
    CONSTRAINT calendar_bookings_no_double_booking
        EXCLUDE USING gist (rep WITH =, tstzrange(start_at, end_at, '[)') WITH &&)
        WHERE (status IN ('held', 'confirming', 'confirmed'))
);
CREATE INDEX calendar_bookings_lapse_idx ON calendar_bookings (expires_at) WHERE status IN ('held', 'confirming');
CREATE INDEX calendar_bookings_session_idx ON calendar_bookings (session_id);
CREATE INDEX calendar_bookings_load_idx ON calendar_bookings (rep, created_at) WHERE status IN ('held', 'confirming', 'confirmed');

-- Idempotency-Key: the first request with a key runs; a retry with the same key and payload gets the stored result.
CREATE TABLE idempotency_keys (
    scope           text NOT NULL,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    text NOT NULL,
    status          text NOT NULL CHECK (status IN ('in_flight', 'completed')),
    locked_until    timestamptz,
    response_status integer,
    response_body   jsonb,
    booking_id      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Work after a booking commits or is cancelled, claimed with FOR UPDATE SKIP LOCKED (like the hand-off outbox).
CREATE TABLE calendar_jobs (
    id           bigserial PRIMARY KEY,
    booking_id   uuid NOT NULL REFERENCES calendar_bookings (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('invite', 'crm_sync', 'provider_cancel', 'cancel_notice', 'crm_cancel')),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    claimed_by   text,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    CONSTRAINT calendar_jobs_once UNIQUE (booking_id, kind)
);
CREATE INDEX calendar_jobs_due_idx ON calendar_jobs (available_at) WHERE status = 'pending';
