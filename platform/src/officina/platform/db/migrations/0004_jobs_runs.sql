-- Jobs (a state machine with leases, fenced by attempt number) and runs with their tracking data.
CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    team_id           bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name              text NOT NULL,
    project           text NOT NULL,
    spec              jsonb NOT NULL,            -- entrypoint or trainer, code, params, datasets, resources
    queue             text NOT NULL,
    priority          integer NOT NULL DEFAULT 0,
    state             text NOT NULL CHECK (state IN ('queued', 'admitted', 'running', 'retrying',
                                                     'succeeded', 'failed', 'cancelled')),
    attempt           integer NOT NULL DEFAULT 0,   -- the fencing token: bumped for every new attempt
    max_retries       integer NOT NULL DEFAULT 2,
    timeout_s         integer NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    cancel_requested  boolean NOT NULL DEFAULT false,
    dispatched_at     timestamptz,                  -- when its message was last sent (the outbox sweep resends)
    dispatches        integer NOT NULL DEFAULT 0,   -- messages sent for this attempt (resends back off)
    reason            text NOT NULL DEFAULT '',
    exit_code         integer,
    run_id            uuid,
    created_by        bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_team ON jobs (team_id, created_at DESC);
CREATE INDEX jobs_state ON jobs (state, lease_expires_at);

CREATE TABLE job_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    from_state text,
    to_state   text NOT NULL,
    attempt    integer NOT NULL,
    reason     text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_events_job ON job_events (job_id, id);

-- Live log lines of each attempt (the console tails them); archived to S3 when the attempt ends.
CREATE TABLE job_logs (
    job_id  uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    seq     integer NOT NULL,
    stream  text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    at      timestamptz NOT NULL DEFAULT now(),
    line    text NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
);

CREATE TABLE runs (
    id          uuid PRIMARY KEY,
    team_id     bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    project     text NOT NULL,
    name        text NOT NULL,
    job_id      uuid REFERENCES jobs (id) ON DELETE SET NULL,
    status      text NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'killed')),
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    tags        jsonb NOT NULL DEFAULT '{}'::jsonb,
    git         jsonb,
    system      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_team_project ON runs (team_id, project, created_at DESC);
ALTER TABLE jobs ADD CONSTRAINT jobs_run FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE SET NULL;

-- One value per (run, key, step): a point logged twice (a retried batch, a resumed job) is kept once.
CREATE TABLE metrics (
    run_id uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key    text NOT NULL,
    step   bigint NOT NULL,
    value  double precision NOT NULL,
    ts     timestamptz NOT NULL,
    PRIMARY KEY (run_id, key, step)
);

CREATE TABLE run_artifacts (
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path       text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('artifact', 'model', 'log')),
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    meta       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, path)
);
CREATE INDEX run_artifacts_sha256 ON run_artifacts (sha256);

-- A checkpoint row is written only after its bytes are fully stored: it counts once complete.
CREATE TABLE checkpoints (
    run_id     uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step       bigint NOT NULL,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    attempt    integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
);
CREATE INDEX checkpoints_sha256 ON checkpoints (sha256);

-- Code bundles submitted with jobs, stored once by hash.
CREATE TABLE code_bundles (
    team_id    bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    files      integer NOT NULL,
    paths      jsonb NOT NULL,                 -- the bundle's file paths (checked at submit)
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, sha256)
);
