-- A checkpoint writes a run's events only after it has updated the run's
-- row (or found it canceled), and no run is ever deleted, so the foreign
-- key from `events` to `runs` checked what the statement already knew. It
-- cost a query and a row lock a row of events (`SELECT … FOR KEY SHARE` of
-- the run the checkpoint had just written): 9,000 of each for 3,000 runs
-- of the reference flow, an eighth of the server's time in checkpoints.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_run_id_fkey;
