-- Builds: the asynchronous making of one dataset version (upload, derive or split) with progress.
ALTER TABLE datasets DROP CONSTRAINT datasets_kind_check;
ALTER TABLE datasets ADD CONSTRAINT datasets_kind_check CHECK (kind IN ('tabular', 'images', 'text', 'files'));

ALTER TABLE dataset_versions ADD COLUMN split_sha256 text;   -- content-addressed split assignment blob
ALTER TABLE dataset_versions ADD COLUMN splits jsonb;        -- per split: count and label distribution

CREATE TABLE dataset_builds (
    id           uuid PRIMARY KEY,
    team_id      bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    dataset      text NOT NULL,
    op           text NOT NULL CHECK (op IN ('upload', 'derive', 'split')),
    status       text NOT NULL CHECK (status IN ('open', 'queued', 'running', 'done', 'failed', 'aborted')),
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    progress     jsonb NOT NULL DEFAULT '{}'::jsonb,
    error        jsonb,
    version      integer,
    bytes_received bigint NOT NULL DEFAULT 0,   -- file bytes actually sent to this build
    created_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dataset_builds_dataset ON dataset_builds (team_id, dataset, created_at DESC);
CREATE INDEX dataset_builds_status ON dataset_builds (status, updated_at);

-- Files an upload build has declared; received once their blob (or every part) is stored.
CREATE TABLE build_files (
    build_id  uuid NOT NULL REFERENCES dataset_builds (id) ON DELETE CASCADE,
    path      text NOT NULL,
    sha256    text NOT NULL,
    size      bigint NOT NULL,
    received  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (build_id, path)
);
CREATE INDEX build_files_sha256 ON build_files (sha256);

-- Parts of large files, staged in S3 under uploads/<build>/<n>/… until the build assembles them.
CREATE TABLE build_parts (
    build_id  uuid NOT NULL REFERENCES dataset_builds (id) ON DELETE CASCADE,
    path      text NOT NULL,
    part      integer NOT NULL CHECK (part > 0),
    parts     integer NOT NULL CHECK (parts > 0),
    size      bigint NOT NULL,
    sha256    text NOT NULL,
    key       text NOT NULL,
    PRIMARY KEY (build_id, path, part)
);
CREATE INDEX dataset_versions_split_sha256 ON dataset_versions (split_sha256) WHERE split_sha256 IS NOT NULL;
