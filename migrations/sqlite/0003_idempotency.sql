-- Idempotency keys: a retried create finds the run the first one made.
CREATE TABLE idempotency (
    key_hash    TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    created_ms  INTEGER NOT NULL
);
CREATE INDEX runs_waking ON runs (wake_at_ms) WHERE status = 'waiting';
