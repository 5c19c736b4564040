-- Runs and their trace events: one row per run, one per event.
CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    flow         TEXT NOT NULL,
    flow_path    TEXT NOT NULL,
    flow_source  TEXT NOT NULL,
    flow_hash    TEXT NOT NULL,
    inputs       TEXT NOT NULL,
    status       TEXT NOT NULL,
    step         TEXT,
    wake_at_ms   INTEGER,
    steps_taken  INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    outcome      TEXT,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX runs_by_status ON runs (status, wake_at_ms);
CREATE INDEX runs_by_flow ON runs (flow, created_ms);
CREATE TABLE events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    event   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
