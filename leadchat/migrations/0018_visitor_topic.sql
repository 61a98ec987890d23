-- Issue 18 (stitching adds ≤ 1 ms to a turn, nbs/12_privacy.ipynb): what a linked session was about, kept on its link
-- when the recorder's stitch step sees it change, so that the visitor's next session reads "last time we talked
-- about …" from this row instead of decrypting this session's checkpoint. AES-GCM ciphertext (the visitor's own
-- words), re-encrypted by rotation like every sealed column; erased with the link.
ALTER TABLE visitor_sessions ADD COLUMN topic_enc text CHECK (length(topic_enc) <= 2000);
