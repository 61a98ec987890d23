-- Staff sign-in for the ops console (leadchat.staff): login attempts for the lockout, an audit
-- trail of what staff did, and case-insensitive usernames. `staff_users` itself is in 0001.

-- Usernames are compared lower-cased (`leadchat staff add` stores them lower-cased).
CREATE UNIQUE INDEX staff_users_username_lower_idx ON staff_users (lower(username));
ALTER TABLE staff_users ADD COLUMN disabled_at timestamptz;

-- Every sign-in attempt, good or bad (never the password). The lockout counts recent failures
-- per username -- known or not, so a lockout does not reveal which usernames exist -- and per client.
CREATE TABLE staff_login_attempts (
    id         bigserial PRIMARY KEY,
    username   text NOT NULL CHECK (length(username) <= 128),
    client     text CHECK (length(client) <= 128),
    method     text NOT NULL CHECK (method IN ('password', 'oidc')),
    succeeded  boolean NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('ok', 'bad_credentials', 'unknown_user', 'disabled', 'locked',
                                               'rate_limited', 'not_staff')),
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staff_login_attempts_user_idx ON staff_login_attempts (username, at DESC) WHERE NOT succeeded;
CREATE INDEX staff_login_attempts_client_idx ON staff_login_attempts (client, at DESC) WHERE NOT succeeded;
CREATE INDEX staff_login_attempts_at_idx ON staff_login_attempts (at);

-- What staff did in the console that changes something outside it (hand-off re-delivery,
-- configuration changelog entries), and sign-ins/outs.
CREATE TABLE staff_audit (
    id        bigserial PRIMARY KEY,
    username  text NOT NULL CHECK (length(username) <= 128),
    action    text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.]{0,63}$'),
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX staff_audit_at_idx ON staff_audit (at DESC);
