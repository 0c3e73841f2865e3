-- Tiles of each metric's history: for every run, key and tile of 2^shift steps, its lowest and
-- highest point and how many points it holds. Ingest keeps them current, so a chart of a long
-- history adds up a few thousand tiles instead of reading every point (tracking/downsample.py).
CREATE TABLE metric_tiles (
    run_id    uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key       text NOT NULL,
    shift     smallint NOT NULL,
    tile      bigint NOT NULL,                -- step >> shift
    min_step  bigint NOT NULL,                -- the lowest point (earliest step on ties)
    min_value double precision NOT NULL,
    max_step  bigint NOT NULL,                -- the highest point (earliest step on ties)
    max_value double precision NOT NULL,
    count     bigint NOT NULL,
    PRIMARY KEY (run_id, key, shift, tile)
);

-- Tiles for the points already stored (the levels are downsample.LEVEL_SHIFTS).
INSERT INTO metric_tiles (run_id, key, shift, tile, min_step, min_value, max_step, max_value, count)
SELECT m.run_id, m.key, l.shift, m.step >> l.shift,
       (array_agg(m.step ORDER BY m.value, m.step))[1], min(m.value),
       (array_agg(m.step ORDER BY m.value DESC, m.step))[1], max(m.value), count(*)
FROM metrics m CROSS JOIN (VALUES (4), (8), (12), (16), (20), (24), (28), (32), (36), (40)) AS l (shift)
GROUP BY m.run_id, m.key, l.shift, m.step >> l.shift;

-- How a checkpoint was saved ('bytes' as given, or 'torch' through torch.save), so a load returns
-- what was saved.
ALTER TABLE checkpoints ADD COLUMN format text NOT NULL DEFAULT 'bytes' CHECK (format IN ('bytes', 'torch'));
