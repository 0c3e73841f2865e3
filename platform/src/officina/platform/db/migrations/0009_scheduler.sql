-- The scheduler: where each admitted GPU job runs (worker and exact GPU indices, one lease row per
-- GPU so no GPU is ever held twice), preemption requests, and the leader's last pass.
ALTER TABLE jobs ADD COLUMN gpus integer GENERATED ALWAYS AS (coalesce((spec->>'gpus')::integer, 0)) STORED;
ALTER TABLE jobs ADD COLUMN worker text;                               -- placed on (GPU jobs)
ALTER TABLE jobs ADD COLUMN gpu_indices integer[] NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN preempt_reason text;                       -- set: yield the GPUs (checkpoint, requeue)
ALTER TABLE jobs ADD COLUMN preemptions integer NOT NULL DEFAULT 0;    -- attempts that ended without failing (preempted, worker gone before start)
CREATE INDEX jobs_queued ON jobs (priority DESC, created_at) WHERE state = 'queued';

CREATE TABLE gpu_leases (
    worker     text NOT NULL REFERENCES workers (name) ON DELETE CASCADE,
    gpu_index  integer NOT NULL,
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt    integer NOT NULL,
    team_id    bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker, gpu_index)
);
CREATE INDEX gpu_leases_job ON gpu_leases (job_id);
CREATE INDEX gpu_leases_team ON gpu_leases (team_id);

-- One row: who leads the scheduler and what its last pass did (for the console and the API).
CREATE TABLE scheduler_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    leader        text,
    leader_since  timestamptz,
    pass_at       timestamptz,
    pass_ms       double precision,
    pass          jsonb NOT NULL DEFAULT '{}'::jsonb
);
INSERT INTO scheduler_state (id) VALUES (true);

-- GPU time of released leases (a lease's own time counts while it is held), for GPU-hour budgets.
CREATE TABLE gpu_usage (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id  bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    since    timestamptz NOT NULL,
    until    timestamptz NOT NULL
);
CREATE INDEX gpu_usage_team ON gpu_usage (team_id, until);
