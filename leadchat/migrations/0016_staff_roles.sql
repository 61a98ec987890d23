-- Issue 18 (nbs/70_staff.ipynb): staff roles. Every staff user is an `agent` (the console's ordinary pages); an
-- `admin` may also act on data-subject requests (the console's Privacy page: export, erasure). Existing users become
-- agents. Roles are set with `leadchat staff add USER --role admin` and `leadchat staff role USER admin`, audited.
ALTER TABLE staff_users ADD COLUMN role text NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'admin'));
