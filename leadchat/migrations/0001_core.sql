-- leadchat core schema. Applied once, in order, under pg_advisory_lock by `leadchat db migrate`.
-- The file's number is its version; never edit an applied migration — add a new file.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- One index row per conversation: browsable without reading checkpoints.
CREATE TABLE sessions (
    session_id          text PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 128),
    created_at          timestamptz NOT NULL DEFAULT now(),
    last_updated_at     timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    turn_count          integer NOT NULL DEFAULT 0 CHECK (turn_count >= 0),
    lead_level          text NOT NULL DEFAULT 'cold' CHECK (lead_level IN ('cold', 'warm', 'hot')),
    current_stage       smallint NOT NULL DEFAULT 1 CHECK (current_stage IN (1, 2, 3)),
    problem_fit         text NOT NULL DEFAULT 'not_detected',
    authority_fit       text NOT NULL DEFAULT 'not_detected',
    company_fit         text NOT NULL DEFAULT 'not_detected',
    timing_fit          text NOT NULL DEFAULT 'not_detected',
    is_negative_persona boolean NOT NULL DEFAULT false,
    is_no_fit           boolean NOT NULL DEFAULT false,
    handoff_reason      text CHECK (handoff_reason IN ('hot_lead', 'explicit_request', 'stall', 'llm_failure')),
    handoff_triggered   boolean NOT NULL DEFAULT false,
    visitor_email       text,
    visitor_name        text,
    visitor_company     text,
    visitor_role        text,
    termination_type    text CHECK (termination_type IN ('explicit_close', 'inactivity_timeout', 'session_expiry'))
);
CREATE INDEX sessions_last_updated_idx ON sessions (last_updated_at DESC);
CREATE INDEX sessions_created_idx ON sessions (created_at);
CREATE INDEX sessions_lead_level_idx ON sessions (lead_level, last_updated_at DESC);
CREATE INDEX sessions_email_idx ON sessions (lower(visitor_email));
CREATE INDEX sessions_company_idx ON sessions (lower(visitor_company));
CREATE INDEX sessions_open_idx ON sessions (created_at) WHERE closed_at IS NULL;

-- Append-only full transcript (the checkpoint keeps only the sliding window).
CREATE TABLE transcript (
    id          bigserial PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    turn_index  integer NOT NULL CHECK (turn_index >= 0),
    role        text NOT NULL CHECK (role IN ('user', 'assistant')),
    content     text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transcript_session_idx ON transcript (session_id, id);
CREATE FUNCTION transcript_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transcript is append-only (UPDATE refused)';
END $$;
CREATE TRIGGER transcript_append_only BEFORE UPDATE ON transcript
    FOR EACH ROW EXECUTE FUNCTION transcript_is_append_only();

-- The CRM of v1 (ADR-009): one lead per session and hand-off reason.
CREATE TABLE leads (
    id              bigserial PRIMARY KEY,
    session_id      text NOT NULL REFERENCES sessions (session_id) ON DELETE RESTRICT,
    handoff_reason  text NOT NULL CHECK (handoff_reason IN ('hot_lead', 'explicit_request', 'stall', 'llm_failure')),
    lead_level      text NOT NULL CHECK (lead_level IN ('cold', 'warm', 'hot')),
    email           text,
    name            text,
    company         text,
    role            text,
    payload         jsonb NOT NULL,
    task_due_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT leads_one_per_session_reason UNIQUE (session_id, handoff_reason)
);

-- Durable hand-off requests: written with the turn, delivered by relays (FOR UPDATE SKIP LOCKED).
CREATE TABLE handoff_outbox (
    id              bigserial PRIMARY KEY,
    session_id      text NOT NULL,
    handoff_reason  text NOT NULL CHECK (handoff_reason IN ('hot_lead', 'explicit_request', 'stall', 'llm_failure')),
    request         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'in_progress', 'delivered', 'partial_failure', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    available_at    timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    claimed_by      text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT handoff_outbox_once UNIQUE (session_id, handoff_reason)
);
CREATE INDEX handoff_outbox_due_idx ON handoff_outbox (available_at) WHERE status IN ('pending', 'in_progress');

-- Audit log: one row per channel attempt and its final outcome.
CREATE TABLE handoff_records (
    id               bigserial PRIMARY KEY,
    session_id       text NOT NULL,
    handoff_reason   text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('slack', 'crm', 'email')),
    status           text NOT NULL CHECK (status IN ('delivered', 'failed', 'skipped')),
    attempt_count    integer NOT NULL DEFAULT 0,
    last_http_status integer,
    error            text,
    crm_record_id    text,
    outcome          text CHECK (outcome IN ('complete', 'partial_failure', 'total_failure')),
    triggered_at     timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX handoff_records_session_idx ON handoff_records (session_id, created_at);

-- One row per analytics event (DESIGN.md §3 lists the types).
CREATE TABLE analytics_events (
    id          bigserial PRIMARY KEY,
    session_id  text,
    event_type  text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]{0,63}$'),
    turn_index  integer,
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX analytics_events_session_idx ON analytics_events (session_id, id);
CREATE INDEX analytics_events_type_idx ON analytics_events (event_type, created_at);

-- Staff who may use the console and the staff API.
CREATE TABLE staff_users (
    id             bigserial PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash  text NOT NULL,
    display_name   text,
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz
);
