-- A checkpoint's trace events in one row rather than a row each: `lines`
-- holds them as JSON lines joined by newlines, numbered from `seq` to
-- `last_seq`. An event was an index entry and three bound values; the
-- reference flow's 24 events a run are now three rows. Rows written before
-- hold one event each.
ALTER TABLE events RENAME COLUMN event TO lines;
ALTER TABLE events ADD COLUMN last_seq BIGINT NOT NULL DEFAULT 0;
UPDATE events SET last_seq = seq;
-- A row over 2 KB was compressed (pglz) and moved out of line, a toast
-- row and its index entry more: with runs' rows rewritten at every
-- checkpoint, a quarter of the server's CPU under a busy worker. Rows up to
-- a page now stay in line as they are (as SQLite keeps them), and a longer
-- one's events go out of line uncompressed.
ALTER TABLE events SET (toast_tuple_target = 8160);
ALTER TABLE events ALTER COLUMN lines SET STORAGE EXTERNAL;
ALTER TABLE runs SET (toast_tuple_target = 8160);
