-- A flow's text once a version, rather than in every run's row: a run's
-- row is rewritten at each checkpoint, and with its flow's text (a few KB)
-- in it, each rewrite copied the text again, on overflow pages.
CREATE TABLE flow_versions (
    hash   TEXT PRIMARY KEY,
    source TEXT NOT NULL
);
INSERT INTO flow_versions (hash, source)
    SELECT flow_hash, MIN(flow_source) FROM runs GROUP BY flow_hash;
ALTER TABLE runs DROP COLUMN flow_source;
