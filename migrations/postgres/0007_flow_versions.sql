-- A flow's text once a version, rather than in every run's row (SQLite's
-- 0010): a run is created with a reference to its version, not a copy.
CREATE TABLE flow_versions (
    hash   TEXT PRIMARY KEY,
    source TEXT NOT NULL
);
INSERT INTO flow_versions (hash, source)
    SELECT flow_hash, MIN(flow_source) FROM runs GROUP BY flow_hash;
ALTER TABLE runs DROP COLUMN flow_source;
