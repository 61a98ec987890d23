-- Follow-through (issue 15): one lead per session kept current, threaded updates through the outbox,
-- the visitor's contact history, consent records with scope.

-- One lead per session. Sessions that already have several (one per hand-off reason) keep the oldest;
-- the others' reasons move onto it.
ALTER TABLE leads ADD COLUMN reasons text[] NOT NULL DEFAULT '{}';
ALTER TABLE leads ADD COLUMN phone text;
ALTER TABLE leads ADD COLUMN slack_channel text;
ALTER TABLE leads ADD COLUMN slack_ts text;
UPDATE leads l SET reasons = x.reasons
  FROM (SELECT session_id, array_agg(handoff_reason ORDER BY id) AS reasons, min(id) AS keep
          FROM leads GROUP BY session_id) x
 WHERE l.id = x.keep;
DELETE FROM leads l USING leads k WHERE k.session_id = l.session_id AND k.id < l.id;
ALTER TABLE leads DROP CONSTRAINT leads_one_per_session_reason;
ALTER TABLE leads ADD CONSTRAINT leads_one_per_session UNIQUE (session_id);
ALTER TABLE leads ADD CONSTRAINT leads_reasons_known
  CHECK (reasons <@ ARRAY['hot_lead', 'explicit_request', 'stall', 'llm_failure', 'booked']::text[]);

-- The outbox carries the first hand-off of a session ('handoff') and what changed after it ('update').
-- A session's rows are delivered in order: an update waits for the hand-off that opens the Slack thread.
ALTER TABLE handoff_outbox ADD COLUMN kind text NOT NULL DEFAULT 'handoff' CHECK (kind IN ('handoff', 'update'));
ALTER TABLE handoff_outbox ADD COLUMN change_key text CHECK (length(change_key) <= 200);
ALTER TABLE handoff_outbox ADD COLUMN changes jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE handoff_outbox DROP CONSTRAINT handoff_outbox_once;
CREATE UNIQUE INDEX handoff_outbox_once ON handoff_outbox (session_id, handoff_reason) WHERE kind = 'handoff';
CREATE UNIQUE INDEX handoff_outbox_update_once ON handoff_outbox (session_id, change_key) WHERE kind = 'update';
CREATE INDEX handoff_outbox_session_idx ON handoff_outbox (session_id, id);

ALTER TABLE handoff_records ADD COLUMN kind text NOT NULL DEFAULT 'handoff' CHECK (kind IN ('handoff', 'update'));
ALTER TABLE handoff_records ADD COLUMN outbox_id bigint;

-- Every contact detail the visitor gave, in order (the latest one is on the session and the lead).
CREATE TABLE contact_history (
    id          bigserial PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    field       text NOT NULL CHECK (field IN ('email', 'name', 'phone', 'company', 'role')),
    value       text NOT NULL CHECK (length(value) <= 320),
    turn_index  integer,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_history_session_idx ON contact_history (session_id, id);

-- Consent per session and scope (seed 000: opt-ins with timestamps and scope; never assumed).
CREATE TABLE consent_records (
    id              bigserial PRIMARY KEY,
    session_id      text NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    scope           text NOT NULL CHECK (scope IN ('chat_processing', 'follow_up', 'marketing')),
    notice_version  text CHECK (length(notice_version) <= 64),
    granted_at      timestamptz NOT NULL,
    source          text NOT NULL CHECK (source IN ('widget', 'chat')),
    evidence        text CHECK (length(evidence) <= 500),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consent_once_per_scope UNIQUE (session_id, scope)
);
