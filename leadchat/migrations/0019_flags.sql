-- Issue 19 item 1 (nbs/15_flags.ipynb): feature flags with percentage ramps and kill switches, evaluated per session by
-- the GrowthBook SDK from an in-process cache of this table (leadchat.flags.FlagStore polls a signature every second).
-- `variations` is a list of {"value", "weight", "removed"}: a removed arm keeps its place (and its share of the hash
-- space) but serves `default_value`, so no other session changes arm. `version` is the optimistic-concurrency check:
-- every edit is `UPDATE … WHERE version = <the version the editor read>` and bumps it.
CREATE TABLE flags (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind          text NOT NULL CHECK (kind IN ('boolean', 'multivariate')),
    description   text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    value         jsonb,                       -- boolean flags: what the ramped share gets (true/false)
    variations    jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(variations) = 'array'),
    default_value jsonb NOT NULL,              -- outside the ramp, and for everyone while killed
    ramp          numeric(6,3) NOT NULL DEFAULT 100 CHECK (ramp >= 0 AND ramp <= 100),
    killed        boolean NOT NULL DEFAULT false,
    version       integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text NOT NULL DEFAULT 'migration' CHECK (length(updated_by) BETWEEN 1 AND 128),
    CHECK (kind <> 'boolean' OR (jsonb_typeof(value) = 'boolean' AND jsonb_typeof(default_value) = 'boolean'))
);

-- Who changed which flag when, the whole row before and after (append-only; `old` is null for a new flag).
CREATE TABLE flag_audit (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    by     text NOT NULL CHECK (length(by) BETWEEN 1 AND 128),
    flag   text NOT NULL,
    action text NOT NULL CHECK (length(action) BETWEEN 1 AND 32),
    old    jsonb,
    new    jsonb NOT NULL
);
CREATE INDEX flag_audit_flag_at_idx ON flag_audit (flag, at DESC);

-- The kill switches: on for every session until someone kills one.
INSERT INTO flags (name, kind, description, value, default_value) VALUES
    ('booking_in_chat',  'boolean', 'Offer calendar slots in the chat (off: the hand-off proposal only)', 'true', 'false'),
    ('proactive_prompt', 'boolean', 'The widget may show its proactive prompt', 'true', 'false'),
    ('hosted_model',     'boolean', 'Answer with the hosted model when one is configured (off: the offline engine)', 'true', 'false'),
    ('rag_answers',      'boolean', 'Answer from the knowledge base (off: an honest no-result)', 'true', 'false'),
    ('slack_delivery',   'boolean', 'Deliver hand-offs to Slack (off: CRM and email only, Slack marked skipped)', 'true', 'false');
INSERT INTO flag_audit (by, flag, action, new)
    SELECT 'migration', name, 'create', to_jsonb(f) - 'updated_at' FROM flags f;
