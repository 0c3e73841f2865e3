"""SQL of dataset builds. Functions take a connection and never open one."""
from __future__ import annotations

import uuid

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from officina.platform.datasets.entities import Build, BuildFile
from officina.platform.db.ids import valid_uuid

# Serialises garbage collection against writers that rely on a blob already being stored.
GC_LOCK = 0x0FF1C1A_6C


_BUILD = """
SELECT b.id::text AS id, b.team_id, t.name AS team, b.dataset, b.op, b.status, b.params, b.progress, b.error,
       b.version, b.bytes_received,
       (SELECT count(*) FROM build_files f WHERE f.build_id = b.id)::int AS files_declared,
       (SELECT count(*) FROM build_files f WHERE f.build_id = b.id AND f.received)::int AS files_received,
       b.created_at, b.updated_at
FROM dataset_builds b JOIN teams t ON t.id = b.team_id"""


def insert_build(conn, *, team_id: int, dataset: str, op: str, status: str, params: dict, user_id: int) -> str:
    build_id = str(uuid.uuid4())
    conn.execute("INSERT INTO dataset_builds (id, team_id, dataset, op, status, params, progress, created_by)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 (build_id, team_id, dataset, op, status, Jsonb(params), Jsonb({"phase": status}), user_id))
    return build_id


def get_build(conn, build_id: str, *, lock: bool = False) -> Build | None:
    if valid_uuid(build_id) is None:
        return None
    if lock:
        conn.execute("SELECT 1 FROM dataset_builds WHERE id = %s FOR UPDATE", (build_id,))
    with conn.cursor(row_factory=class_row(Build)) as cur:
        return cur.execute(_BUILD + " WHERE b.id = %s", (build_id,)).fetchone()


def get_build_lean(conn, build_id: str) -> Build | None:
    """A build without its file counts (cheap: for every request of an upload)."""
    if valid_uuid(build_id) is None:
        return None
    with conn.cursor(row_factory=class_row(Build)) as cur:
        return cur.execute(
            "SELECT b.id::text AS id, b.team_id, t.name AS team, b.dataset, b.op, b.status, b.params, b.progress,"
            " b.error, b.version, b.bytes_received, 0 AS files_declared, 0 AS files_received, b.created_at,"
            " b.updated_at FROM dataset_builds b JOIN teams t ON t.id = b.team_id WHERE b.id = %s",
            (build_id,)).fetchone()


def list_builds(conn, team_id: int, dataset: str, limit: int = 50) -> list[Build]:
    with conn.cursor(row_factory=class_row(Build)) as cur:
        return cur.execute(_BUILD + " WHERE b.team_id = %s AND b.dataset = %s ORDER BY b.created_at DESC LIMIT %s",
                           (team_id, dataset, limit)).fetchall()


def set_status(conn, build_id: str, status: str, *, progress: dict | None = None, error: dict | None = None,
               version: int | None = None, expect: tuple[str, ...] | None = None) -> bool:
    """Move a build to ``status`` (only from one of ``expect`` when given); return whether it moved."""
    sql = ("UPDATE dataset_builds SET status = %s, progress = coalesce(%s, progress), error = %s,"
           " version = coalesce(%s, version), updated_at = now() WHERE id = %s")
    args: list = [status, Jsonb(progress) if progress is not None else None,
                  Jsonb(error) if error is not None else None, version, build_id]
    if expect:
        sql += " AND status = ANY(%s)"
        args.append(list(expect))
    return conn.execute(sql, args).rowcount == 1


def set_progress(conn, build_id: str, progress: dict) -> None:
    conn.execute("UPDATE dataset_builds SET progress = %s, updated_at = now() WHERE id = %s",
                 (Jsonb(progress), build_id))


def add_bytes(conn, build_id: str, n: int) -> None:
    conn.execute("UPDATE dataset_builds SET bytes_received = bytes_received + %s, updated_at = now()"
                 " WHERE id = %s", (n, build_id))


def files(conn, build_id: str, paths: list[str] | None = None) -> list[BuildFile]:
    with conn.cursor(row_factory=class_row(BuildFile)) as cur:
        if paths is None:
            return cur.execute("SELECT path, sha256, size, received FROM build_files WHERE build_id = %s"
                               " ORDER BY path", (build_id,)).fetchall()
        return cur.execute("SELECT path, sha256, size, received FROM build_files WHERE build_id = %s"
                           " AND path = ANY(%s)", (build_id, paths)).fetchall()


def upsert_files(conn, build_id: str, rows: list[tuple[str, str, int, bool]]) -> None:
    """Declare files (path, sha256, size, received); a received flag only ever turns on."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO build_files (build_id, path, sha256, size, received) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (build_id, path) DO UPDATE SET received = build_files.received"
                        " OR EXCLUDED.received", [(build_id, *row) for row in rows])


def mark_received(conn, build_id: str, paths: list[str]) -> None:
    conn.execute("UPDATE build_files SET received = true WHERE build_id = %s AND path = ANY(%s)", (build_id, paths))


def known_hashes(conn, team_id: int, hashes: list[str]) -> set[str]:
    """Among ``hashes``, those whose blob the team already holds (in a version or a received build file)."""
    if not hashes:
        return set()
    rows = conn.execute(
        "SELECT f.sha256 FROM dataset_files f JOIN dataset_versions v ON v.id = f.version_id"
        " JOIN datasets d ON d.id = v.dataset_id WHERE d.team_id = %s AND f.sha256 = ANY(%s)"
        " UNION SELECT bf.sha256 FROM build_files bf JOIN dataset_builds b ON b.id = bf.build_id"
        " WHERE b.team_id = %s AND bf.received AND b.status IN ('open', 'queued', 'running', 'done')"
        " AND bf.sha256 = ANY(%s)", (team_id, hashes, team_id, hashes)).fetchall()
    return {r[0] for r in rows}


def parts(conn, build_id: str) -> dict[str, list[tuple[int, int, int, str, str]]]:
    """Staged parts by path: [(part, parts, size, sha256, key)] in part order."""
    out: dict[str, list] = {}
    for row in conn.execute("SELECT path, part, parts, size, sha256, key FROM build_parts WHERE build_id = %s"
                            " ORDER BY path, part", (build_id,)):
        out.setdefault(row[0], []).append(tuple(row[1:]))
    return out


def upsert_part(conn, build_id: str, path: str, part: int, parts_: int, size: int, sha256: str, key: str) -> None:
    conn.execute("INSERT INTO build_parts (build_id, path, part, parts, size, sha256, key)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (build_id, path, part) DO UPDATE"
                 " SET parts = EXCLUDED.parts, size = EXCLUDED.size, sha256 = EXCLUDED.sha256, key = EXCLUDED.key",
                 (build_id, path, part, parts_, size, sha256, key))


def delete_parts(conn, build_id: str) -> list[str]:
    """Forget a build's staged parts; return their S3 keys."""
    return [r[0] for r in conn.execute("DELETE FROM build_parts WHERE build_id = %s RETURNING key", (build_id,))]


def stale_builds(conn, older_than_s: float) -> list[str]:
    """Builds that ended or were left open longer than ``older_than_s`` ago and still hold staged parts or rows."""
    rows = conn.execute(
        "SELECT id::text FROM dataset_builds WHERE updated_at < now() - make_interval(secs => %s)"
        " AND (status IN ('open', 'failed', 'aborted')"
        "      OR (status = 'done' AND EXISTS (SELECT 1 FROM build_parts p WHERE p.build_id = dataset_builds.id)))",
        (older_than_s,)).fetchall()
    return [r[0] for r in rows]
