-- Issue 18 (returning visitors and their rights, nbs/12_privacy.ipynb): visitors and the identities that link their
-- sessions, merges, and the data-subject request log. Identity values are AES-GCM ciphertext (LEADCHAT_DATA_KEY),
-- found through a keyed HMAC blind index; key_id names the key that wrote each value (rotation, wrong-key check).

-- One row per person. A visitor merged into another stays as a pointer (merged_into) with nothing else on it.
CREATE TABLE visitors (
    visitor_id     uuid PRIMARY KEY,
    first_seen_at  timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    name_enc       text CHECK (length(name_enc) <= 1000),
    name_key_id    text CHECK (name_key_id ~ '^[0-9a-f]{12}$'),
    merged_into    uuid REFERENCES visitors (visitor_id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT visitors_name_key CHECK ((name_enc IS NULL) = (name_key_id IS NULL))
);
CREATE INDEX visitors_merged_into_idx ON visitors (merged_into) WHERE merged_into IS NOT NULL;
CREATE INDEX visitors_name_key_idx ON visitors (name_key_id) WHERE name_key_id IS NOT NULL;

-- What the visitor gave us that identifies them: an email (normalised), a phone (E.164), the widget's first-party
-- visitor id (kept in localStorage, only with chat_processing consent). One identity belongs to one visitor.
CREATE TABLE visitor_identities (
    id             bigserial PRIMARY KEY,
    visitor_id     uuid NOT NULL REFERENCES visitors (visitor_id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('email', 'phone', 'browser')),
    blind_index    bytea NOT NULL CHECK (length(blind_index) = 32),
    value_enc      text NOT NULL CHECK (length(value_enc) <= 1000),
    key_id         text NOT NULL CHECK (key_id ~ '^[0-9a-f]{12}$'),
    first_seen_at  timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,
    CONSTRAINT visitor_identities_once UNIQUE (kind, blind_index)
);
CREATE INDEX visitor_identities_visitor_idx ON visitor_identities (visitor_id);
CREATE INDEX visitor_identities_key_idx ON visitor_identities (key_id);
CREATE INDEX visitor_identities_blind_idx ON visitor_identities (blind_index);

-- The sessions of a visitor, and how each was linked.
CREATE TABLE visitor_sessions (
    session_id  text PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    visitor_id  uuid NOT NULL REFERENCES visitors (visitor_id) ON DELETE CASCADE,
    linked_by   text NOT NULL CHECK (linked_by IN ('email', 'phone', 'browser', 'session')),
    linked_at   timestamptz NOT NULL
);
CREATE INDEX visitor_sessions_visitor_idx ON visitor_sessions (visitor_id, linked_at);

-- Two visitors found to be one person (one identity connected them): recorded, never silent.
CREATE TABLE visitor_merges (
    id            bigserial PRIMARY KEY,
    from_visitor  uuid NOT NULL,
    into_visitor  uuid NOT NULL,
    at            timestamptz NOT NULL
);
CREATE INDEX visitor_merges_from_idx ON visitor_merges (from_visitor);
CREATE INDEX visitor_merges_into_idx ON visitor_merges (into_visitor);

-- Data-subject requests (export, erasure, dry runs): what the law lets us keep after an erasure — a keyed hash of
-- the identity (HMAC under key_id), the time, the operator and the counts; never the identity itself.
CREATE TABLE privacy_requests (
    id             bigserial PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('export', 'erase', 'erase_dry_run')),
    identity_hash  text NOT NULL CHECK (identity_hash ~ '^[0-9a-f]{64}$'),
    key_id         text NOT NULL CHECK (key_id ~ '^[0-9a-f]{12}$'),
    operator       text NOT NULL CHECK (length(operator) BETWEEN 1 AND 128),
    counts         jsonb NOT NULL DEFAULT '{}'::jsonb,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX privacy_requests_at_idx ON privacy_requests (at DESC);
