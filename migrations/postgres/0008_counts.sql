-- What /metrics counts (runs by flow and status), from this index rather
-- than a scan of every run's row (SQLite's 0009).
CREATE INDEX runs_by_flow_status ON runs (flow, status);
