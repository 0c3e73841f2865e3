"""SQL of the Data area. Functions take a connection and never open one."""
from __future__ import annotations

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from officina.platform.datasets.entities import Dataset, DatasetFile, DatasetVersion, ordered_splits

_DATASET = """
SELECT d.id, d.team_id, d.name, d.kind, d.description, d.created_at,
       (SELECT count(*) FROM dataset_versions v WHERE v.dataset_id = d.id)::int AS version_count,
       (SELECT max(number) FROM dataset_versions v WHERE v.dataset_id = d.id) AS latest
FROM datasets d"""

_VERSION = """
SELECT v.id, v.dataset_id, v.number, v.format, v.manifest_sha256, v.file_count, v.total_bytes, v.row_count,
       v.label_column, v.text_column, v.schema, v.stats, v.preview, v.origin, v.message, v.created_at,
       coalesce((SELECT array_agg(t.tag ORDER BY t.tag) FROM dataset_tags t WHERE t.version_id = v.id),
                '{}') AS tags,
       (SELECT p.number FROM dataset_versions p WHERE p.id = v.parent_id) AS parent,
       v.splits, v.split_sha256, (SELECT d.kind FROM datasets d WHERE d.id = v.dataset_id) AS kind
FROM dataset_versions v"""


def list_datasets(conn, team_id: int) -> list[Dataset]:
    with conn.cursor(row_factory=class_row(Dataset)) as cur:
        return cur.execute(_DATASET + " WHERE d.team_id = %s ORDER BY d.name", (team_id,)).fetchall()


def get_dataset(conn, team_id: int, name: str, *, lock: bool = False) -> Dataset | None:
    if lock:
        conn.execute("SELECT 1 FROM datasets WHERE team_id = %s AND name = %s FOR UPDATE", (team_id, name))
    with conn.cursor(row_factory=class_row(Dataset)) as cur:
        return cur.execute(_DATASET + " WHERE d.team_id = %s AND d.name = %s", (team_id, name)).fetchone()


def insert_dataset(conn, team_id: int, name: str, kind: str, user_id: int) -> None:
    """Create the dataset unless it exists (concurrent creators both succeed)."""
    conn.execute("INSERT INTO datasets (team_id, name, kind, created_by) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT (team_id, name) DO NOTHING", (team_id, name, kind, user_id))


def insert_version(conn, *, dataset_id: int, fields: dict, user_id: int) -> int:
    """Insert the next version number of a (locked) dataset; return its number."""
    number = conn.execute("SELECT coalesce(max(number), 0) + 1 FROM dataset_versions WHERE dataset_id = %s",
                          (dataset_id,)).fetchone()[0]
    values = {k: Jsonb(v) if k in ("schema", "stats", "preview", "origin", "splits") and v is not None else v
              for k, v in fields.items()}
    columns = ", ".join(values)
    placeholders = ", ".join(f"%({k})s" for k in values)
    version_id = conn.execute(
        f"INSERT INTO dataset_versions (dataset_id, number, created_by, {columns})"
        f" VALUES (%(dataset_id)s, %(number)s, %(user_id)s, {placeholders}) RETURNING id",
        {**values, "dataset_id": dataset_id, "number": number, "user_id": user_id}).fetchone()[0]
    conn.execute("INSERT INTO dataset_tags (dataset_id, tag, version_id, moved_by) VALUES (%s, 'latest', %s, %s)"
                 " ON CONFLICT (dataset_id, tag) DO UPDATE SET version_id = EXCLUDED.version_id,"
                 " moved_by = EXCLUDED.moved_by, moved_at = now()", (dataset_id, version_id, user_id))
    return number


def insert_files(conn, version_id: int, files: list[DatasetFile]) -> None:
    with conn.cursor().copy("COPY dataset_files (version_id, path, sha256, size, label) FROM STDIN") as copy:
        for f in files:
            copy.write_row((version_id, f.path, f.sha256, f.size, f.label))


def version_id(conn, dataset_id: int, number: int) -> int | None:
    row = conn.execute("SELECT id FROM dataset_versions WHERE dataset_id = %s AND number = %s",
                       (dataset_id, number)).fetchone()
    return row[0] if row else None


def get_version(conn, dataset_id: int, ref: str) -> DatasetVersion | None:
    """A version by number (``"3"``) or by tag (``"latest"``, ``"golden"``)."""
    with conn.cursor(row_factory=class_row(DatasetVersion)) as cur:
        if ref.isdigit():
            version = cur.execute(_VERSION + " WHERE v.dataset_id = %s AND v.number = %s",
                                  (dataset_id, int(ref))).fetchone()
        else:
            version = cur.execute(_VERSION + " JOIN dataset_tags t ON t.version_id = v.id"
                                  " WHERE t.dataset_id = %s AND t.tag = %s", (dataset_id, ref)).fetchone()
        return ordered_splits(version) if version else None


def list_versions(conn, dataset_id: int) -> list[DatasetVersion]:
    with conn.cursor(row_factory=class_row(DatasetVersion)) as cur:
        return [ordered_splits(v) for v in
                cur.execute(_VERSION + " WHERE v.dataset_id = %s ORDER BY v.number DESC", (dataset_id,)).fetchall()]


def list_files(conn, version_id_: int) -> list[DatasetFile]:
    with conn.cursor(row_factory=class_row(DatasetFile)) as cur:
        return cur.execute("SELECT path, sha256, size, label FROM dataset_files WHERE version_id = %s ORDER BY path",
                           (version_id_,)).fetchall()


def record_lineage(conn, version_id_: int, consumer_kind: str, consumer_id: str, role: str = "") -> None:
    """Record that a consumer used a version (a repeat is a no-op)."""
    conn.execute("INSERT INTO dataset_lineage (dataset_version_id, consumer_kind, consumer_id, role)"
                 " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", (version_id_, consumer_kind, consumer_id, role))


def version_users(conn, version_id_: int) -> list[dict]:
    rows = conn.execute("SELECT consumer_kind, consumer_id, role, created_at FROM dataset_lineage"
                        " WHERE dataset_version_id = %s ORDER BY created_at, id", (version_id_,)).fetchall()
    return [{"consumer_kind": k, "consumer_id": c, "role": r, "created_at": t} for k, c, r, t in rows]


def derived_versions(conn, version_id_: int) -> list[dict]:
    rows = conn.execute("SELECT d.name, v.number FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id"
                        " WHERE v.parent_id = %s ORDER BY v.number", (version_id_,)).fetchall()
    return [{"dataset": name, "version": number} for name, number in rows]


def used_by_consumer(conn, team_id: int, consumer_kind: str, consumer_id: str) -> list[dict]:
    rows = conn.execute(
        "SELECT d.name, v.number, l.role, l.created_at FROM dataset_lineage l"
        " JOIN dataset_versions v ON v.id = l.dataset_version_id JOIN datasets d ON d.id = v.dataset_id"
        " WHERE d.team_id = %s AND l.consumer_kind = %s AND l.consumer_id = %s ORDER BY d.name, v.number",
        (team_id, consumer_kind, consumer_id)).fetchall()
    return [{"dataset": n, "version": v, "role": r, "created_at": t} for n, v, r, t in rows]


def tags(conn, dataset_id: int) -> dict[str, int]:
    rows = conn.execute("SELECT t.tag, v.number FROM dataset_tags t JOIN dataset_versions v ON v.id = t.version_id"
                        " WHERE t.dataset_id = %s ORDER BY t.tag", (dataset_id,)).fetchall()
    return {tag: number for tag, number in rows}


def move_tag(conn, dataset_id: int, tag: str, version_id_: int, user_id: int) -> None:
    conn.execute("INSERT INTO dataset_tags (dataset_id, tag, version_id, moved_by) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT (dataset_id, tag) DO UPDATE SET version_id = EXCLUDED.version_id,"
                 " moved_by = EXCLUDED.moved_by, moved_at = now()", (dataset_id, tag, version_id_, user_id))


def delete_tag(conn, dataset_id: int, tag: str) -> bool:
    return conn.execute("DELETE FROM dataset_tags WHERE dataset_id = %s AND tag = %s",
                        (dataset_id, tag)).rowcount == 1
