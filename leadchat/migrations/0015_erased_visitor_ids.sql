-- Issue 18 (the widget's visitor id is rotated on erasure): the sha256 of each erased first-party visitor id (a random
-- UUID the widget generated; its hash identifies no one). A turn that still brings one is not linked, and its `done`
-- event tells the widget to draw a new id.
CREATE TABLE erased_visitor_ids (
    id_hash    bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    erased_at  timestamptz NOT NULL
);
