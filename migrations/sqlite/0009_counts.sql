-- What /metrics counts (runs by flow and status), read from this index alone:
-- a run's row holds its flow's text, so a scan of the table reads every
-- run's overflow pages to reach its status.
CREATE INDEX runs_by_flow_status ON runs (flow, status);
