-- Issue 18 (stitching adds ≤ 1 ms to a turn, nbs/12_privacy.ipynb): the visitor's stitching as three server-side
-- functions, each one statement — one round trip — inside the turn's transaction. A client-side savepoint (and the
-- pipeline that spares its round trips) cost ≈ 0.3 ms a call; here PL/pgSQL's EXCEPTION block is the savepoint: a
-- failure rolls back the function's own work and comes back as its SQLSTATE in `r_error` (never the message: it may
-- quote a value), and the turn's transaction goes on. Parameters are blind indexes and ciphertexts, never plaintext.

-- `stitch`: lock each identity (transaction-level advisory locks, in the array's order), find the visitors the identities
-- or the session's link point to (the oldest wins; none: a new one when anything identifies the session), merge the
-- others into it (recorded), then every identity seen again — under the current key or, mid-rotation, an old one —
-- or inserted, the session's link, the visitor's times and name.
CREATE OR REPLACE FUNCTION leadchat_stitch(
    p_session text, p_new uuid, p_identified boolean, p_lock_space integer, p_lock_keys integer[], p_all_bidx bytea[],
    p_at timestamptz, p_key_id text, p_how text, p_seen_kinds text[], p_seen_bidx bytea[], p_kinds text[],
    p_current bytea[], p_enc text[], p_carried timestamptz, p_topic text, p_name text, p_name_key_id text,
    OUT r_visitor uuid, OUT r_created boolean, OUT r_merged uuid[], OUT r_error text)
LANGUAGE plpgsql AS $$
DECLARE
    found_ids uuid[];
    loser uuid;
BEGIN
    r_created := false; r_merged := '{}';
    PERFORM pg_advisory_xact_lock(p_lock_space, k) FROM unnest(p_lock_keys) WITH ORDINALITY AS u(k, n) ORDER BY n;
    -- a new statement, a new snapshot: what a concurrent stitch committed before its lock was released is seen
    SELECT array_agg(v.visitor_id ORDER BY v.first_seen_at, v.visitor_id) INTO found_ids FROM visitors v
    WHERE v.visitor_id IN (SELECT i.visitor_id FROM visitor_identities i WHERE i.blind_index = ANY(p_all_bidx)
                           UNION SELECT s.visitor_id FROM visitor_sessions s WHERE s.session_id = p_session);
    IF found_ids IS NULL THEN
        IF NOT p_identified THEN RETURN; END IF;          -- nothing identifies anyone
        INSERT INTO visitors (visitor_id, first_seen_at, last_seen_at) VALUES (p_new, p_at, p_at);
        r_visitor := p_new; r_created := true;
    ELSE
        r_visitor := found_ids[1]; r_merged := found_ids[2:];
    END IF;
    FOREACH loser IN ARRAY r_merged LOOP
        UPDATE visitor_identities SET visitor_id = r_visitor WHERE visitor_id = loser;
        UPDATE visitor_sessions SET visitor_id = r_visitor WHERE visitor_id = loser;
        UPDATE visitors w SET first_seen_at = least(w.first_seen_at, l.first_seen_at),
                              last_seen_at = greatest(w.last_seen_at, l.last_seen_at),
                              name_enc = COALESCE(w.name_enc, l.name_enc), name_key_id = COALESCE(w.name_key_id, l.name_key_id)
        FROM visitors l WHERE w.visitor_id = r_visitor AND l.visitor_id = loser;
        UPDATE visitors SET merged_into = r_visitor, name_enc = NULL, name_key_id = NULL WHERE visitor_id = loser;
        UPDATE visitors SET merged_into = r_visitor WHERE merged_into = loser;
        INSERT INTO visitor_merges (from_visitor, into_visitor, at) VALUES (loser, r_visitor, p_at);
    END LOOP;
    WITH seen AS (UPDATE visitor_identities i SET last_seen_at = greatest(i.last_seen_at, p_at)
                  FROM unnest(p_seen_kinds, p_seen_bidx) AS a(kind, bidx)
                  WHERE i.kind = a.kind AND i.blind_index = a.bidx RETURNING i.kind),
         new AS (INSERT INTO visitor_identities (visitor_id, kind, blind_index, value_enc, key_id, first_seen_at, last_seen_at)
                 SELECT r_visitor, g.kind, g.bidx, g.enc, p_key_id, p_at, p_at
                 FROM unnest(p_kinds, p_current, p_enc) AS g(kind, bidx, enc)
                 WHERE g.kind NOT IN (SELECT kind FROM seen)
                 ON CONFLICT (kind, blind_index) DO UPDATE SET last_seen_at = greatest(visitor_identities.last_seen_at, EXCLUDED.last_seen_at)),
         link AS (INSERT INTO visitor_sessions AS vs (session_id, visitor_id, linked_by, linked_at, carried_at, topic_enc)
                  VALUES (p_session, r_visitor, p_how, p_at, p_carried, p_topic)
                  ON CONFLICT (session_id) DO UPDATE SET visitor_id = EXCLUDED.visitor_id,
                       carried_at = COALESCE(vs.carried_at, EXCLUDED.carried_at),
                       topic_enc = COALESCE(EXCLUDED.topic_enc, vs.topic_enc))
    UPDATE visitors SET last_seen_at = greatest(last_seen_at, p_at), first_seen_at = least(first_seen_at, p_at),
                        name_enc = COALESCE(p_name, name_enc), name_key_id = COALESCE(p_name_key_id, name_key_id)
    WHERE visitor_id = r_visitor;
EXCEPTION WHEN OTHERS THEN
    r_visitor := NULL; r_created := false; r_merged := '{}'; r_error := SQLSTATE;
END $$;

-- `join_visitor`: the session joins the visitor the turn's lookup found by the widget's id — or the one it has been
-- merged into since — only if the session consented to chat_processing. Nothing is created and nothing merges, so no
-- lock is taken; a session linked meanwhile stays.
CREATE OR REPLACE FUNCTION leadchat_join_visitor(
    p_session text, p_visitor uuid, p_at timestamptz, p_carried timestamptz, p_topic text, p_bidx bytea[],
    OUT r_error text)
LANGUAGE plpgsql AS $$
BEGIN
    WITH v AS (SELECT COALESCE(merged_into, visitor_id) AS visitor_id FROM visitors WHERE visitor_id = p_visitor
                 AND EXISTS (SELECT 1 FROM consent_records WHERE session_id = p_session AND scope = 'chat_processing')),
         link AS (INSERT INTO visitor_sessions (session_id, visitor_id, linked_by, linked_at, carried_at, topic_enc)
                  SELECT p_session, visitor_id, 'browser', p_at, p_carried, p_topic FROM v
                  ON CONFLICT (session_id) DO NOTHING RETURNING visitor_id),
         seen AS (UPDATE visitor_identities SET last_seen_at = greatest(last_seen_at, p_at)
                  WHERE kind = 'browser' AND blind_index = ANY(p_bidx) AND EXISTS (SELECT 1 FROM link))
    UPDATE visitors SET last_seen_at = greatest(last_seen_at, p_at), first_seen_at = least(first_seen_at, p_at)
    WHERE visitor_id IN (SELECT visitor_id FROM link);
EXCEPTION WHEN OTHERS THEN
    r_error := SQLSTATE;
END $$;

-- the link of a session already linked: what it is about (when that changed) and that its visitor's history was
-- carried into it (once)
CREATE OR REPLACE FUNCTION leadchat_link_update(p_session text, p_carried timestamptz, p_topic text, OUT r_error text)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE visitor_sessions SET carried_at = COALESCE(carried_at, p_carried), topic_enc = COALESCE(p_topic, topic_enc)
    WHERE session_id = p_session;
EXCEPTION WHEN OTHERS THEN
    r_error := SQLSTATE;
END $$;
