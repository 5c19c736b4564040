-- The lease: who runs a run, and until when unless renewed.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until_ms INTEGER;
