-- Hyper-parameter studies. The search itself is Optuna's: its tables live in the schema `optuna`
-- (created by Optuna's RDBStorage on first use); ours say which job runs which trial.
CREATE SCHEMA IF NOT EXISTS optuna;

CREATE TABLE studies (
    id            uuid PRIMARY KEY,
    team_id       bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name          text NOT NULL,
    spec          jsonb NOT NULL,   -- base job, space, metric, mode, trials, parallel, algorithm, early_stopping, budget
    state         text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'stopped')),
    reason        text NOT NULL DEFAULT '',
    optuna_name   text NOT NULL UNIQUE,
    best          jsonb,            -- {"number", "value", "params", "job_id", "run_id"}
    created_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (team_id, name)
);
CREATE INDEX studies_running ON studies (state) WHERE state = 'running';

CREATE TABLE study_trials (
    study_id     uuid NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    number       integer NOT NULL,       -- Optuna's trial number
    job_id       uuid REFERENCES jobs (id) ON DELETE SET NULL,
    state        text NOT NULL CHECK (state IN ('running', 'pruning', 'complete', 'pruned', 'failed')),
    params       jsonb NOT NULL,
    value        double precision,       -- the final metric (complete) or the last reported (pruned)
    last_step    bigint,                 -- the last intermediate value reported to the pruner
    reason       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (study_id, number)
);
CREATE INDEX study_trials_job ON study_trials (job_id);
