-- The same schema meaning as the SQLite store (src/store/sqlite.rs).
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    flow            TEXT NOT NULL,
    flow_path       TEXT NOT NULL,
    flow_source     TEXT NOT NULL,
    flow_hash       TEXT NOT NULL,
    inputs          TEXT NOT NULL,
    status          TEXT NOT NULL,
    step            TEXT,
    wake_at_ms      BIGINT,
    steps_taken     BIGINT NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    outcome         TEXT,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    -- The lease: who runs it, and until when unless renewed.
    owner           TEXT,
    lease_until_ms  BIGINT
);
CREATE INDEX runs_by_status ON runs (status, wake_at_ms);
CREATE INDEX runs_by_flow ON runs (flow, created_ms);
CREATE INDEX runs_waking ON runs (wake_at_ms) WHERE status = 'waiting';
CREATE INDEX runs_unfinished ON runs (status, lease_until_ms) WHERE status IN ('running', 'waiting');

CREATE TABLE events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     BIGINT NOT NULL,
    event   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE idempotency (
    key_hash    TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    created_ms  BIGINT NOT NULL
);

-- What every worker must agree on: a value sealed with the store key, so a
-- worker given another key refuses to start instead of writing what no
-- other worker can read.
CREATE TABLE handoff_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
