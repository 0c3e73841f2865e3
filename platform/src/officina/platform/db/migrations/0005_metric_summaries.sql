-- The last, min and max value and count of each metric of a run, kept current on ingest, so run
-- tables and sorts by a metric never scan histories.
CREATE TABLE metric_summaries (
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key        text NOT NULL,
    last_step  bigint NOT NULL,
    last_value double precision NOT NULL,
    min_value  double precision NOT NULL,
    max_value  double precision NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX metric_summaries_key ON metric_summaries (key, last_value);
