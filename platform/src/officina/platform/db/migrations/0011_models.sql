-- Model registry, evaluations (CI gates), exports, deployments and prediction logs.
-- Model files and exports are content-addressed blobs (blobs/sha256/...), like run artifacts.
CREATE TABLE models (
    id            uuid PRIMARY KEY,
    team_id       bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    gate_policy   jsonb NOT NULL DEFAULT '{}'::jsonb,   -- see platform/models/gates.py
    created_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE model_versions (
    id           uuid PRIMARY KEY,
    model_id     uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    version      integer NOT NULL,
    format       text NOT NULL CHECK (format IN ('torchscript', 'onnx')),
    sha256       text NOT NULL,          -- the model file
    size         bigint NOT NULL,
    signature    jsonb NOT NULL,         -- {"inputs": {"dtype", "shape", "names"}, "outputs": {...}, "task", "classes"}
    run_id       uuid REFERENCES runs (id) ON DELETE SET NULL,
    lineage      jsonb NOT NULL DEFAULT '{}'::jsonb,   -- run, job, code bundle + git, dataset versions
    description  text NOT NULL DEFAULT '',
    created_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_sha256 ON model_versions (sha256);

-- An alias points at one version and moves only through promotion (with its gates recorded).
CREATE TABLE model_aliases (
    model_id    uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias       text NOT NULL,
    version_id  uuid NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    moved_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    moved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias)
);

CREATE TABLE model_promotions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id         uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    alias            text NOT NULL,
    from_version_id  uuid REFERENCES model_versions (id) ON DELETE SET NULL,
    to_version_id    uuid REFERENCES model_versions (id) ON DELETE SET NULL,
    evaluation_id    uuid,
    outcome          text NOT NULL CHECK (outcome IN ('promoted', 'blocked', 'overridden')),
    gates            jsonb NOT NULL DEFAULT '[]'::jsonb,
    override_reason  text NOT NULL DEFAULT '',
    by_user          bigint REFERENCES users (id) ON DELETE SET NULL,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_promotions_model ON model_promotions (model_id, id DESC);

CREATE TABLE model_evaluations (
    id           uuid PRIMARY KEY,
    version_id   uuid NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    state        text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    trigger      text NOT NULL DEFAULT 'manual' CHECK (trigger IN ('manual', 'auto')),
    policy       jsonb NOT NULL,          -- the gate policy as it was when the evaluation was asked for
    target_alias text NOT NULL DEFAULT 'production',
    results      jsonb,                   -- metrics, per_class, latency, parity, baseline
    gates        jsonb,                   -- [{"gate", "passed", "detail"}]
    passed       boolean,
    reason       text NOT NULL DEFAULT '',
    created_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz NOT NULL DEFAULT now(),   -- when its message was last sent (the sweep resends)
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX model_evaluations_version ON model_evaluations (version_id, created_at DESC);

CREATE TABLE model_exports (
    version_id   uuid NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    format       text NOT NULL CHECK (format IN ('onnx', 'torchscript', 'onnx_int8')),
    state        text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    sha256       text,
    size         bigint,
    report       jsonb,                   -- latency (ms, batch 1 and 64), parity with the original, runtime
    reason       text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    PRIMARY KEY (version_id, format)
);
CREATE INDEX model_exports_sha256 ON model_exports (sha256);

-- Deployments: a name (global: it is in the prediction URL) routed to versions by weight.
CREATE TABLE deployments (
    id                 uuid PRIMARY KEY,
    team_id            bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name               text NOT NULL UNIQUE,
    spec               jsonb NOT NULL,    -- {"routes": [{"version_id", "weight"}], "shadow": version_id|null,
                                          --  "max_batch_size", "max_wait_ms", "log_sample"}
    revision           integer NOT NULL DEFAULT 1,
    created_by         bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deployment_revisions (
    deployment_id  uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    revision       integer NOT NULL,
    spec           jsonb NOT NULL,
    note           text NOT NULL DEFAULT '',
    by_user        bigint REFERENCES users (id) ON DELETE SET NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, revision)
);

-- Every prediction (or a sample): written in batches off the response path by the serving process.
CREATE TABLE prediction_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment_id  uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    version_id     uuid,
    shadow         boolean NOT NULL DEFAULT false,
    request_id     text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    latency_ms     real NOT NULL,
    inputs         jsonb NOT NULL,
    outputs        jsonb NOT NULL
);
CREATE INDEX prediction_logs_deployment ON prediction_logs (deployment_id, at DESC);

-- Batch prediction: score a whole dataset version; the result is a new dataset version.
CREATE TABLE batch_predictions (
    id           uuid PRIMARY KEY,
    team_id      bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    version_id   uuid NOT NULL REFERENCES model_versions (id) ON DELETE CASCADE,
    source       jsonb NOT NULL,          -- {"dataset", "version"}
    output       jsonb NOT NULL,          -- {"dataset"} and, when done, {"version"}
    state        text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    rows         integer,
    reason       text NOT NULL DEFAULT '',
    created_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    dispatched_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
