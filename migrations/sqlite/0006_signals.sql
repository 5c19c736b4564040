-- A run waiting in a `wait_for` says which wait (`approval#0`), and a
-- signal for it lands beside it until the run takes it.
ALTER TABLE runs ADD COLUMN waiting_for TEXT;
ALTER TABLE runs ADD COLUMN signal TEXT;
