-- The same idempotency key with other inputs is a conflict, not a replay:
-- a digest of the inputs is kept beside the key.
ALTER TABLE idempotency ADD COLUMN fingerprint TEXT;
