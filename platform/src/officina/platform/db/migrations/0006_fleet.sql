-- The worker fleet: each worker registers its host, queues and capacity (GPUs with index, model and
-- memory, or simulated ones) and heartbeats; one that stops heartbeating is marked lost.
CREATE TABLE workers (
    name            text PRIMARY KEY,
    host            text NOT NULL,
    pid             integer NOT NULL,
    queues          text[] NOT NULL,
    cpus            integer NOT NULL,
    memory_mb       bigint NOT NULL,
    gpus            jsonb NOT NULL DEFAULT '[]'::jsonb,   -- [{index, model, memory_mb, simulated}]
    status          text NOT NULL CHECK (status IN ('online', 'lost', 'stopped')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workers_status ON workers (status, last_heartbeat);
