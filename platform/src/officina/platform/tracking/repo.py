"""SQL of experiment tracking. Functions take a connection and never open one."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from officina.platform.db.ids import valid_uuid
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
        sql += " AND r.name ILIKE %s"
        args.append(f"%{q.replace('%', '').replace('_', '')}%")
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


def insert_metrics(conn, run_id: str, points: list[tuple[str, int, float, datetime]]) -> int:
    """Insert points, ignoring (key, step) pairs already stored; keep the summaries current. Return how many were new."""
    conn.execute("CREATE TEMP TABLE metrics_in (key text, step bigint, value double precision, ts timestamptz)"
                 " ON COMMIT DROP")
    with conn.cursor().copy("COPY metrics_in (key, step, value, ts) FROM STDIN") as copy:
        for point in points:
            copy.write_row(point)
    inserted = conn.execute(
        "WITH new AS (INSERT INTO metrics (run_id, key, step, value, ts)"
        "   SELECT DISTINCT ON (key, step) %s, key, step, value, ts FROM metrics_in ORDER BY key, step"
        "   ON CONFLICT (run_id, key, step) DO NOTHING RETURNING key, step, value),"
        " agg AS (SELECT key, max(step) AS last_step, min(value) AS min_value, max(value) AS max_value,"
        "   count(*) AS n, (array_agg(value ORDER BY step DESC))[1] AS last_value FROM new GROUP BY key),"
        " up AS (INSERT INTO metric_summaries (run_id, key, last_step, last_value, min_value, max_value, count)"
        "   SELECT %s, key, last_step, last_value, min_value, max_value, n FROM agg"
        "   ON CONFLICT (run_id, key) DO UPDATE SET"
        "     last_value = CASE WHEN EXCLUDED.last_step >= metric_summaries.last_step THEN EXCLUDED.last_value"
        "                       ELSE metric_summaries.last_value END,"
        "     last_step = greatest(metric_summaries.last_step, EXCLUDED.last_step),"
        "     min_value = least(metric_summaries.min_value, EXCLUDED.min_value),"
        "     max_value = greatest(metric_summaries.max_value, EXCLUDED.max_value),"
        "     count = metric_summaries.count + EXCLUDED.count RETURNING 1)"
        " SELECT coalesce(sum(n), 0) FROM agg", (run_id, run_id)).fetchone()[0]
    return int(inserted)


def metric_summaries(conn, run_id: str) -> dict[str, dict]:
    rows = conn.execute("SELECT key, last_step, last_value, min_value, max_value, count FROM metric_summaries"
                        " WHERE run_id = %s ORDER BY key", (run_id,)).fetchall()
    return {k: {"last": lv, "step": ls, "min": mn, "max": mx, "count": n} for k, ls, lv, mn, mx, n in rows}


def history(conn, run_id: str, key: str, *, min_step: int | None, max_step: int | None,
            max_points: int) -> tuple[list[list], int, bool]:
    """Points ``[step, value, ts]`` of one metric; above ``max_points`` each step bucket keeps its min and max."""
    lo_hi = conn.execute("SELECT min(step), max(step), count(*) FROM metrics WHERE run_id = %s AND key = %s"
                         " AND step >= coalesce(%s, step) AND step <= coalesce(%s, step)",
                         (run_id, key, min_step, max_step)).fetchone()
    lo, hi, total = lo_hi
    if not total:
        return [], 0, False
    if total <= max_points:
        rows = conn.execute("SELECT step, value, ts FROM metrics WHERE run_id = %s AND key = %s AND step BETWEEN %s"
                            " AND %s ORDER BY step", (run_id, key, lo, hi)).fetchall()
        return [[s, v, t] for s, v, t in rows], total, False
    buckets = max(1, max_points // 2)
    rows = conn.execute(
        "SELECT smin, vmin, smax, vmax FROM ("
        "  SELECT width_bucket(step, %s, %s + 1, %s) AS b,"
        "         (array_agg(step ORDER BY value, step))[1] AS smin, min(value) AS vmin,"
        "         (array_agg(step ORDER BY value DESC, step))[1] AS smax, max(value) AS vmax"
        "  FROM metrics WHERE run_id = %s AND key = %s AND step BETWEEN %s AND %s GROUP BY 1) x ORDER BY b",
        (lo, hi, buckets, run_id, key, lo, hi)).fetchall()
    points: list[list] = []
    for smin, vmin, smax, vmax in rows:
        pair = sorted({(smin, vmin), (smax, vmax)})
        points.extend([s, v, None] for s, v in pair)
    return points, total, True


def upsert_artifact(conn, run_id: str, path: str, kind: str, sha256: str, size: int, meta: dict) -> None:
    conn.execute("INSERT INTO run_artifacts (run_id, path, kind, sha256, size, meta) VALUES (%s, %s, %s, %s, %s, %s)"
                 " ON CONFLICT (run_id, path) DO UPDATE SET kind = EXCLUDED.kind, sha256 = EXCLUDED.sha256,"
                 " size = EXCLUDED.size, meta = EXCLUDED.meta, created_at = now()",
                 (run_id, path, kind, sha256, size, Jsonb(meta)))


def artifacts(conn, run_id: str) -> list[Artifact]:
    with conn.cursor(row_factory=class_row(Artifact)) as cur:
        return cur.execute("SELECT path, kind, sha256, size, meta, created_at FROM run_artifacts WHERE run_id = %s"
                           " ORDER BY path", (run_id,)).fetchall()


def insert_checkpoint(conn, run_id: str, step: int, sha256: str, size: int, attempt: int | None) -> None:
    conn.execute("INSERT INTO checkpoints (run_id, step, sha256, size, attempt) VALUES (%s, %s, %s, %s, %s)"
                 " ON CONFLICT (run_id, step) DO UPDATE SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size,"
                 " attempt = EXCLUDED.attempt, created_at = now()", (run_id, step, sha256, size, attempt))


def checkpoints(conn, run_id: str) -> list[Checkpoint]:
    with conn.cursor(row_factory=class_row(Checkpoint)) as cur:
        return cur.execute("SELECT step, sha256, size, attempt, created_at FROM checkpoints WHERE run_id = %s"
                           " ORDER BY step", (run_id,)).fetchall()


def run_lineage(conn, run_id: str) -> list[dict]:
    rows = conn.execute(
        "SELECT d.name, v.number, l.role FROM dataset_lineage l JOIN dataset_versions v ON v.id = l.dataset_version_id"
        " JOIN datasets d ON d.id = v.dataset_id WHERE l.consumer_kind = 'run' AND l.consumer_id = %s"
        " ORDER BY d.name, v.number", (run_id,)).fetchall()
    return [{"dataset": n, "version": v, "role": r} for n, v, r in rows]
