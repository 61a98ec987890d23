-- Issue 18 item 2 (memory across sessions, nbs/12_privacy.ipynb): when a returning visitor's earlier knowledge was
-- carried into a session, so that it is carried once.
ALTER TABLE visitor_sessions ADD COLUMN carried_at timestamptz;
