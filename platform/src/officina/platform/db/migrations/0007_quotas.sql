-- Per-team policy set by admins: concurrent GPUs, an optional GPU-hour budget per week, the highest
-- job priority, and a fair-share weight. A team without a row has the defaults: no GPU cap, no
-- budget, any priority, weight 1.
CREATE TABLE team_quotas (
    team_id             bigint PRIMARY KEY REFERENCES teams (id) ON DELETE CASCADE,
    max_gpus            integer CHECK (max_gpus IS NULL OR max_gpus >= 0),
    gpu_hours_per_week  double precision CHECK (gpu_hours_per_week IS NULL OR gpu_hours_per_week >= 0),
    max_priority        text NOT NULL DEFAULT 'high' CHECK (max_priority IN ('low', 'normal', 'high')),
    weight              double precision NOT NULL DEFAULT 1 CHECK (weight > 0),
    updated_by          bigint REFERENCES users (id) ON DELETE SET NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
