-- Issue 18 item 4 (nbs/12_privacy.ipynb): the rest of the visitor's personal data encrypted at rest under
-- LEADCHAT_DATA_KEY, as visitors and visitor_identities are (0013). Each `*_enc` column holds an AES-GCM value
-- `v1.<key id>.<data>` (the key id travels in the value); each `*_bidx` is the keyed HMAC blind index of a normalised
-- email, for the lookups by equality (a session, lead, contact or booking found by email).
-- SQL cannot encrypt: rows written before this migration keep their plaintext until the service's start-up (or
-- `leadchat privacy rotate-key`) seals them and NULLs the plaintext column; readers read either until then.

ALTER TABLE sessions ADD COLUMN visitor_email_enc text CHECK (length(visitor_email_enc) <= 1000);
ALTER TABLE sessions ADD COLUMN visitor_name_enc text CHECK (length(visitor_name_enc) <= 1000);
ALTER TABLE sessions ADD COLUMN visitor_email_bidx bytea CHECK (length(visitor_email_bidx) = 32);
CREATE INDEX sessions_email_bidx_idx ON sessions (visitor_email_bidx) WHERE visitor_email_bidx IS NOT NULL;
DROP INDEX IF EXISTS sessions_email_idx;      -- lower(visitor_email): the column is emptied as rows are sealed

ALTER TABLE leads ADD COLUMN email_enc text CHECK (length(email_enc) <= 1000);
ALTER TABLE leads ADD COLUMN name_enc text CHECK (length(name_enc) <= 1000);
ALTER TABLE leads ADD COLUMN phone_enc text CHECK (length(phone_enc) <= 1000);
ALTER TABLE leads ADD COLUMN email_bidx bytea CHECK (length(email_bidx) = 32);
CREATE INDEX leads_email_bidx_idx ON leads (email_bidx) WHERE email_bidx IS NOT NULL;

-- every contact value is sealed (one path for the five fields); emails also get their blind index
ALTER TABLE contact_history ALTER COLUMN value DROP NOT NULL;
ALTER TABLE contact_history ADD COLUMN value_enc text CHECK (length(value_enc) <= 1000);
ALTER TABLE contact_history ADD COLUMN value_bidx bytea CHECK (length(value_bidx) = 32);
ALTER TABLE contact_history ADD CONSTRAINT contact_history_has_value CHECK (value IS NOT NULL OR value_enc IS NOT NULL);
CREATE INDEX contact_history_bidx_idx ON contact_history (value_bidx) WHERE value_bidx IS NOT NULL;

ALTER TABLE calendar_bookings ADD COLUMN visitor_name_enc text CHECK (length(visitor_name_enc) <= 1000);
ALTER TABLE calendar_bookings ADD COLUMN visitor_email_enc text CHECK (length(visitor_email_enc) <= 1000);
ALTER TABLE calendar_bookings ADD COLUMN visitor_email_bidx bytea CHECK (length(visitor_email_bidx) = 32);
ALTER TABLE calendar_bookings ADD COLUMN notes_enc text CHECK (length(notes_enc) <= 4000);    -- free text the visitor typed
CREATE INDEX calendar_bookings_email_bidx_idx ON calendar_bookings (visitor_email_bidx) WHERE visitor_email_bidx IS NOT NULL;

-- The transcript: whatever the visitor typed (an email, a phone, a name) is sealed. `email_bidx` holds the blind
-- indexes of the emails found in a message, so that an erasure still finds a session whose email is only in its text.
ALTER TABLE transcript ALTER COLUMN content DROP NOT NULL;
ALTER TABLE transcript ADD COLUMN content_enc text;
ALTER TABLE transcript ADD COLUMN email_bidx bytea[] NOT NULL DEFAULT '{}';
ALTER TABLE transcript ADD CONSTRAINT transcript_has_content CHECK (content IS NOT NULL OR content_enc IS NOT NULL);
CREATE INDEX transcript_email_bidx_idx ON transcript USING gin (email_bidx);

-- Still append-only: an UPDATE may only seal a message (plaintext → ciphertext) or re-encrypt it (rotation); what was
-- said, by whom and when never changes.
CREATE OR REPLACE FUNCTION transcript_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id = OLD.id AND NEW.session_id = OLD.session_id AND NEW.turn_index = OLD.turn_index AND NEW.role = OLD.role
       AND NEW.at = OLD.at AND NEW.content IS NULL AND NEW.content_enc IS NOT NULL THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'transcript is append-only (UPDATE refused)';
END $$;

-- What is still plaintext (rows from before this migration), for the start-up sealing pass: empty once sealed, so that
-- every later start-up finds nothing at the cost of an empty index scan.
CREATE INDEX sessions_plain_pii_idx ON sessions (session_id) WHERE visitor_email IS NOT NULL OR visitor_name IS NOT NULL;
CREATE INDEX leads_plain_pii_idx ON leads (id) WHERE email IS NOT NULL OR name IS NOT NULL OR phone IS NOT NULL;
CREATE INDEX contact_history_plain_idx ON contact_history (id) WHERE value IS NOT NULL;
CREATE INDEX calendar_bookings_plain_pii_idx ON calendar_bookings (id)
    WHERE visitor_email IS NOT NULL OR visitor_name IS NOT NULL OR notes IS NOT NULL;
CREATE INDEX transcript_plain_idx ON transcript (id) WHERE content IS NOT NULL;
