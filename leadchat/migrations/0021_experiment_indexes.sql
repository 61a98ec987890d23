-- Issue 19 items 3 and 5: the reads of the Experiments and Shadow routing pages.
-- An experiment's exposures (17_results: one query per experiment, then each exposed session's outcomes through
-- analytics_events_session_idx): without this, every exposure of every experiment is read through the type index.
CREATE INDEX analytics_events_exposure_idx ON analytics_events ((payload->>'experiment'), session_id, id)
    WHERE event_type = 'experiment_exposure';
-- The turns a shadow routing policy was decided on (16a_shadow: disagreement rate and examples): only turns that carry
-- a shadow decision are indexed (the pages' `payload->'shadow'->>'experiment' = name` implies the predicate), so the
-- index is empty while no shadow policy runs.
CREATE INDEX analytics_events_shadow_idx ON analytics_events ((payload->'shadow'->>'experiment'), created_at)
    WHERE payload->'shadow'->>'experiment' IS NOT NULL;
