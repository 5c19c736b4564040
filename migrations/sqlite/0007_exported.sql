-- How far a run's OpenTelemetry spans were exported: the seq of the last
-- event whose spans the collector took. The next process exports after it.
ALTER TABLE runs ADD COLUMN exported_seq INTEGER NOT NULL DEFAULT 0;
