"""SQL of experiment tracking. Functions take a connection and never open one."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from officina.platform.db.ids import valid_uuid
from officina.platform.tracking import downsample
from officina.platform.tracking.downsample import LEVEL_SHIFTS
from officina.platform.tracking.entities import Artifact, Checkpoint, Run

_RUN = """
SELECT r.id::text AS id, r.team_id, t.name AS team, r.project, r.name, r.job_id::text AS job_id, r.status, r.params,
       r.tags, r.git, r.system, r.created_by, r.created_at, r.ended_at, r.updated_at
FROM runs r JOIN teams t ON t.id = r.team_id"""


def insert_run(conn, *, team_id: int, project: str, name: str, params: dict, tags: dict, git: dict | None,
               user_id: int) -> str:
    run_id = str(uuid.uuid4())
    conn.execute("INSERT INTO runs (id, team_id, project, name, status, params, tags, git, created_by)"
                 " VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s)",
                 (run_id, team_id, project, name, Jsonb(params), Jsonb(tags), Jsonb(git) if git else None, user_id))
    return run_id


def get_run(conn, run_id: str) -> Run | None:
    if valid_uuid(run_id) is None:
        return None
    with conn.cursor(row_factory=class_row(Run)) as cur:
        return cur.execute(_RUN + " WHERE r.id = %s", (run_id,)).fetchone()


def list_runs(conn, team_id: int, *, project: str | None, status: str | None, q: str | None,
              sort_metric: str | None, descending: bool, limit: int) -> list[Run]:
    sql, args = _RUN, []
    if sort_metric:
        sql += " LEFT JOIN metric_summaries s ON s.run_id = r.id AND s.key = %s"
        args.append(sort_metric)
    sql += " WHERE r.team_id = %s"
    args.append(team_id)
    for column, value in (("r.project", project), ("r.status", status)):
        if value:
            sql += f" AND {column} = %s"
            args.append(value)
    if q:
        sql += r" AND r.name ILIKE %s ESCAPE '\'"
        args.append("%" + q.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%")
    order = "DESC NULLS LAST" if descending else "ASC NULLS LAST"
    sql += f" ORDER BY {'s.last_value ' + order + ', ' if sort_metric else ''}r.created_at DESC LIMIT %s"
    args.append(limit)
    with conn.cursor(row_factory=class_row(Run)) as cur:
        return cur.execute(sql, args).fetchall()


def last_metrics(conn, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for run_id, key, value in conn.execute(
            "SELECT run_id::text, key, last_value FROM metric_summaries WHERE run_id = ANY(%s::uuid[]) ORDER BY key",
            (list(run_ids),)):
        out.setdefault(run_id, {})[key] = value
    return out


def projects(conn, team_id: int) -> list[dict]:
    rows = conn.execute("SELECT project, count(*), max(created_at) FROM runs WHERE team_id = %s GROUP BY project"
                        " ORDER BY max(created_at) DESC", (team_id,)).fetchall()
    return [{"name": p, "runs": n, "last_run_at": t} for p, n, t in rows]


def update_run(conn, run_id: str, *, status: str | None = None, name: str | None = None,
               tags: dict | None = None, params: dict | None = None, system: dict | None = None) -> None:
    sets, args = ["updated_at = now()"], []
    if status is not None:
        sets += ["status = %s", "ended_at = CASE WHEN %s = 'running' THEN NULL ELSE now() END"]
        args += [status, status]
    if name is not None:
        sets.append("name = %s")
        args.append(name)
    for column, value in (("tags", tags), ("params", params), ("system", system)):
        if value is not None:
            sets.append(f"{column} = {column} || %s")
            args.append(Jsonb(value))
    conn.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = %s", (*args, run_id))


def _tile_sql() -> str:
    """CTEs ``t<shift>`` with the new points' tiles at every level (each level built from the one
    below), and ``tiles``, which merges them into ``metric_tiles``."""
    ctes, selects, prev = [], [], None
    for shift in LEVEL_SHIFTS:
        if prev is None:
            source, by, n = "new", f"step >> {shift}", "count(*)"
            lo, hi = "array_agg(step ORDER BY value, step)", "array_agg(step ORDER BY value DESC, step)"
            vlo, vhi = "min(value)", "max(value)"
        else:
            source, by, n = f"t{prev}", f"tile >> {shift - prev}", "sum(n)"
            lo = "array_agg(min_step ORDER BY min_value, min_step)"
            hi = "array_agg(max_step ORDER BY max_value DESC, max_step)"
            vlo, vhi = "min(min_value)", "max(max_value)"
        ctes.append(f"t{shift} AS (SELECT key, {by} AS tile, ({lo})[1] AS min_step, {vlo} AS min_value,"
                    f" ({hi})[1] AS max_step, {vhi} AS max_value, {n} AS n FROM {source} GROUP BY key, {by})")
        selects.append(f"SELECT key, {shift} AS shift, tile, min_step, min_value, max_step, max_value, n FROM t{shift}")
        prev = shift
    merge = (
        "tiles AS (INSERT INTO metric_tiles (run_id, key, shift, tile, min_step, min_value, max_step, max_value, count)"
        " SELECT %(run)s, * FROM (" + " UNION ALL ".join(selects) + ") d ORDER BY key, shift, tile"
        " ON CONFLICT (run_id, key, shift, tile) DO UPDATE SET"
        "   min_step = CASE WHEN (EXCLUDED.min_value, EXCLUDED.min_step)"
        "                        < (metric_tiles.min_value, metric_tiles.min_step)"
        "                   THEN EXCLUDED.min_step ELSE metric_tiles.min_step END,"
        "   min_value = least(metric_tiles.min_value, EXCLUDED.min_value),"
        "   max_step = CASE WHEN EXCLUDED.max_value > metric_tiles.max_value OR (EXCLUDED.max_value ="
        "                   metric_tiles.max_value AND EXCLUDED.max_step < metric_tiles.max_step)"
        "                   THEN EXCLUDED.max_step ELSE metric_tiles.max_step END,"
        "   max_value = greatest(metric_tiles.max_value, EXCLUDED.max_value),"
        "   count = metric_tiles.count + EXCLUDED.count RETURNING 1)")
    return ", ".join(ctes + [merge])


_INSERT_METRICS = (
    "WITH new AS (INSERT INTO metrics (run_id, key, step, value, ts)"
    "   SELECT DISTINCT ON (key, step) %(run)s, key, step, value, ts FROM metrics_in ORDER BY key, step"
    "   ON CONFLICT (run_id, key, step) DO NOTHING RETURNING key, step, value),"
    " agg AS (SELECT key, max(step) AS last_step, min(value) AS min_value, max(value) AS max_value,"
    "   count(*) AS n, (array_agg(value ORDER BY step DESC))[1] AS last_value FROM new GROUP BY key),"
    " up AS (INSERT INTO metric_summaries (run_id, key, last_step, last_value, min_value, max_value, count)"
    "   SELECT %(run)s, key, last_step, last_value, min_value, max_value, n FROM agg ORDER BY key"
    "   ON CONFLICT (run_id, key) DO UPDATE SET"
    "     last_value = CASE WHEN EXCLUDED.last_step >= metric_summaries.last_step THEN EXCLUDED.last_value"
    "                       ELSE metric_summaries.last_value END,"
    "     last_step = greatest(metric_summaries.last_step, EXCLUDED.last_step),"
    "     min_value = least(metric_summaries.min_value, EXCLUDED.min_value),"
    "     max_value = greatest(metric_summaries.max_value, EXCLUDED.max_value),"
    "     count = metric_summaries.count + EXCLUDED.count RETURNING 1), "
    + _tile_sql() +
    " SELECT coalesce(sum(n), 0) FROM agg")


def insert_metrics(conn, run_id: str, points: list[tuple[str, int, float, datetime]]) -> int:
    """Insert points, ignoring (key, step) pairs already stored; keep the summaries and tiles current.
    Return how many were new."""
    conn.execute("CREATE TEMP TABLE metrics_in (key text, step bigint, value double precision, ts timestamptz)"
                 " ON COMMIT DROP")
    with conn.cursor().copy("COPY metrics_in (key, step, value, ts) FROM STDIN") as copy:
        for point in points:
            copy.write_row(point)
    return int(conn.execute(_INSERT_METRICS, {"run": run_id}).fetchone()[0])


def metric_summaries(conn, run_id: str) -> dict[str, dict]:
    rows = conn.execute("SELECT key, last_step, last_value, min_value, max_value, count FROM metric_summaries"
                        " WHERE run_id = %s ORDER BY key", (run_id,)).fetchall()
    return {k: {"last": lv, "step": ls, "min": mn, "max": mx, "count": n} for k, ls, lv, mn, mx, n in rows}


_ENDS = (
    "SELECT (SELECT step FROM metrics WHERE run_id = %(run)s AND key = %(key)s AND step >= %(lo)s"
    "        ORDER BY step LIMIT 1),"
    "       (SELECT step FROM metrics WHERE run_id = %(run)s AND key = %(key)s AND step <= %(hi)s"
    "        ORDER BY step DESC LIMIT 1)")
_POINTS = ("SELECT step, value, ts FROM metrics WHERE run_id = %(run)s AND key = %(key)s"
           " AND step BETWEEN %(lo)s AND %(hi)s ORDER BY step LIMIT %(limit)s")
_RAW_PIECES = ("SELECT step AS at, step AS min_step, value AS min_value, step AS max_step, value AS max_value,"
               " 1 AS count FROM metrics WHERE run_id = %(run)s AND key = %(key)s AND step BETWEEN {lo} AND {hi}")
_TILE_PIECES = ("SELECT tile << %(shift)s AS at, min_step, min_value, max_step, max_value, count FROM metric_tiles"
                " WHERE run_id = %(run)s AND key = %(key)s AND shift = %(shift)s AND tile BETWEEN %(t0)s AND %(t1)s")
_BUCKETS = ("SELECT (array_agg(min_step ORDER BY min_value, min_step))[1], min(min_value),"
            " (array_agg(max_step ORDER BY max_value DESC, max_step))[1], max(max_value), sum(count)"
            " FROM ({pieces}) p GROUP BY (at - %(base)s) / %(width)s ORDER BY (at - %(base)s) / %(width)s")


def history(conn, run_id: str, key: str, *, min_step: int | None, max_step: int | None,
            max_points: int) -> tuple[list[list], int, bool]:
    """Points ``[step, value, ts]`` of one metric with their total, and whether they were downsampled:
    above ``max_points`` each bucket keeps its min and max point (``ts`` None), added up from tiles
    where the range is long (see ``downsample``)."""
    args: dict = {"run": run_id, "key": key, "lo": min_step or 0, "hi": 2**63 - 1 if max_step is None else max_step}
    lo, hi = conn.execute(_ENDS, args).fetchone()
    if lo is None or hi is None or lo > hi:
        return [], 0, False
    args.update(lo=lo, hi=hi, limit=max_points + 1)
    rows = conn.execute(_POINTS, args).fetchall()
    if len(rows) <= max_points:
        return [[s, v, t] for s, v, t in rows], len(rows), False
    g = downsample.grid(lo, hi, max_points // 2)
    p = downsample.plan(lo, hi, g)
    pieces = []
    for i, (a, b) in enumerate(p.raw):
        args[f"r{i}a"], args[f"r{i}b"] = a, b
        pieces.append(_RAW_PIECES.format(lo=f"%(r{i}a)s", hi=f"%(r{i}b)s"))
    if p.tiles is not None:
        args.update(shift=g.shift, t0=p.tiles[0], t1=p.tiles[1])
        pieces.append(_TILE_PIECES)
    args.update(base=g.base, width=g.width)
    buckets = conn.execute(_BUCKETS.format(pieces=" UNION ALL ".join(pieces)), args).fetchall()
    total = sum(int(n) for *_, n in buckets)
    points = downsample.assemble(((smin, vmin), (smax, vmax)) for smin, vmin, smax, vmax, _ in buckets)
    return [[s, v, None] for s, v in points], total, True  # tiles keep no times: a downsampled point has none


def upsert_artifact(conn, run_id: str, path: str, kind: str, sha256: str, size: int, meta: dict) -> None:
    conn.execute("INSERT INTO run_artifacts (run_id, path, kind, sha256, size, meta) VALUES (%s, %s, %s, %s, %s, %s)"
                 " ON CONFLICT (run_id, path) DO UPDATE SET kind = EXCLUDED.kind, sha256 = EXCLUDED.sha256,"
                 " size = EXCLUDED.size, meta = EXCLUDED.meta, created_at = now()",
                 (run_id, path, kind, sha256, size, Jsonb(meta)))


def artifacts(conn, run_id: str, path: str | None = None) -> list[Artifact]:
    """The run's artifacts (only the one at ``path`` when given)."""
    where, args = ("AND path = %s", (run_id, path)) if path is not None else ("", (run_id,))
    with conn.cursor(row_factory=class_row(Artifact)) as cur:
        return cur.execute("SELECT path, kind, sha256, size, meta, created_at FROM run_artifacts"
                           f" WHERE run_id = %s {where} ORDER BY path", args).fetchall()


def insert_checkpoint(conn, run_id: str, step: int, sha256: str, size: int, attempt: int | None,
                      fmt: str) -> None:
    conn.execute("INSERT INTO checkpoints (run_id, step, sha256, size, attempt, format) VALUES (%s, %s, %s, %s, %s, %s)"
                 " ON CONFLICT (run_id, step) DO UPDATE SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size,"
                 " attempt = EXCLUDED.attempt, format = EXCLUDED.format, created_at = now()",
                 (run_id, step, sha256, size, attempt, fmt))


def checkpoints(conn, run_id: str) -> list[Checkpoint]:
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        return cur.execute("SELECT step, sha256, size, attempt, format, created_at FROM checkpoints"
                           " WHERE run_id = %s ORDER BY step", (run_id,)).fetchall()


def checkpoint(conn, run_id: str, step: int | None) -> Checkpoint | None:
    """The checkpoint at ``step``, or the latest (``None``)."""
    where, args = ("AND step = %s", (run_id, step)) if step is not None else ("", (run_id,))
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        return cur.execute("SELECT step, sha256, size, attempt, format, created_at FROM checkpoints"
                           f" WHERE run_id = %s {where} ORDER BY step DESC LIMIT 1", args).fetchone()


def run_lineage(conn, run_id: str) -> list[dict]:
    rows = conn.execute(
        "SELECT d.name, v.number, l.role FROM dataset_lineage l JOIN dataset_versions v ON v.id = l.dataset_version_id"
        " JOIN datasets d ON d.id = v.dataset_id WHERE l.consumer_kind = 'run' AND l.consumer_id = %s"
        " ORDER BY d.name, v.number", (run_id,)).fetchall()
    return [{"dataset": n, "version": v, "role": r} for n, v, r in rows]
