-- Issue 19 item 2 (nbs/16_experiments.ipynb): experiments. An A/B experiment varies one TARGET (leadchat.experiments.TARGETS)
-- through the live variations of one multivariate flag (its arms; the flag's default_value is the control arm); a shadow
-- experiment (kind 'shadow', target 'routing', no flag) runs a candidate routing `policy` beside the live one.
-- `version` is the optimistic-concurrency check (every edit is `UPDATE … WHERE version = <read version>` and bumps it).
CREATE TABLE experiments (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    kind        text NOT NULL CHECK (kind IN ('ab', 'shadow')),
    target      text NOT NULL CHECK (length(target) BETWEEN 1 AND 64),   -- see TARGETS; 'routing' for kind='shadow'
    flag        text REFERENCES flags(name) ON UPDATE CASCADE,           -- ab: the multivariate flag whose variations are the arms; null for shadow
    status      text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'running', 'halted', 'stopped')),
    policy      jsonb NOT NULL DEFAULT '{}'::jsonb,   -- shadow: the candidate routing policy (see shadow)
    guardrails  jsonb NOT NULL DEFAULT '{}'::jsonb,   -- ab: see GUARDRAILS
    halted_arm  text,                                 -- the arm a guardrail (or a person) halted
    halt_reason text,
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 500),
    started_at  timestamptz,
    stopped_at  timestamptz,
    version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL CHECK (length(updated_by) BETWEEN 1 AND 128),
    CHECK (kind <> 'ab' OR flag IS NOT NULL)
);
-- at most one running (or halted) experiment per target
CREATE UNIQUE INDEX experiments_live_target ON experiments (target) WHERE status IN ('running', 'halted');
-- Who changed which experiment when, the whole row before and after (append-only; `old` is null for a new experiment).
CREATE TABLE experiment_audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(),
    by text NOT NULL CHECK (length(by) BETWEEN 1 AND 128), experiment text NOT NULL,
    action text NOT NULL CHECK (length(action) BETWEEN 1 AND 32), old jsonb, new jsonb NOT NULL);
CREATE INDEX experiment_audit_at_idx ON experiment_audit (experiment, at DESC);
