-- A checkpoint's trace events in one row rather than a row each: `lines`
-- holds them as JSON lines joined by newlines, numbered from `seq` to
-- `last_seq`. An event was an index entry and three bound values; the
-- reference flow's 24 events a run are now three rows. Rows written before
-- hold one event each.
ALTER TABLE events RENAME COLUMN event TO lines;
ALTER TABLE events ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
UPDATE events SET last_seq = seq;
-- A row of a few KB is stored out of line, and was compressed with pglz on
-- the way: a quarter of the server's CPU under a busy worker. Stored as it
-- is (as SQLite stores it), it costs the disk more and the CPU nothing.
ALTER TABLE events ALTER COLUMN lines SET STORAGE EXTERNAL;
