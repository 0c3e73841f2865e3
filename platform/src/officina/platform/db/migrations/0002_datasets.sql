-- Datasets owned by teams; immutable versions whose files live in S3 by content hash.
CREATE TABLE datasets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id     bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('tabular', 'images', 'text')),
    description text NOT NULL DEFAULT '',
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE dataset_versions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_id      bigint NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    number          integer NOT NULL CHECK (number > 0),
    format          text NOT NULL,
    manifest_sha256 text NOT NULL,
    file_count      integer NOT NULL,
    total_bytes     bigint NOT NULL,
    row_count       bigint,
    label_column    text,
    text_column     text,
    schema          jsonb,
    stats           jsonb NOT NULL DEFAULT '{}'::jsonb,
    preview         jsonb NOT NULL DEFAULT '{}'::jsonb,
    parent_id       bigint REFERENCES dataset_versions (id) ON DELETE SET NULL,
    origin          jsonb NOT NULL DEFAULT '{}'::jsonb,
    message         text NOT NULL DEFAULT '',
    created_by      bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dataset_id, number)
);

CREATE TABLE dataset_files (
    version_id bigint NOT NULL REFERENCES dataset_versions (id) ON DELETE CASCADE,
    path       text NOT NULL,
    sha256     text NOT NULL,
    size       bigint NOT NULL,
    label      text,
    PRIMARY KEY (version_id, path)
);
CREATE INDEX dataset_files_sha256 ON dataset_files (sha256);

CREATE TABLE dataset_tags (
    dataset_id bigint NOT NULL REFERENCES datasets (id) ON DELETE CASCADE,
    tag        text NOT NULL,
    version_id bigint NOT NULL REFERENCES dataset_versions (id) ON DELETE CASCADE,
    moved_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    moved_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_id, tag)
);

-- Which runs, models or derived versions used which dataset version (filled in by later areas).
CREATE TABLE dataset_lineage (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dataset_version_id bigint NOT NULL REFERENCES dataset_versions (id) ON DELETE CASCADE,
    consumer_kind      text NOT NULL CHECK (consumer_kind IN ('run', 'model_version', 'dataset_version')),
    consumer_id        text NOT NULL,
    role               text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dataset_version_id, consumer_kind, consumer_id, role)
);
