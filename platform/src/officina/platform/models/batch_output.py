"""Store a table made on the server (a batch prediction's output) as the next version of a dataset.

Like an upload: the file and manifest go to S3 first, then one transaction records the version, its
file, the moved ``latest`` tag and its lineage; the GC lock is held shared throughout.
"""
from __future__ import annotations

import io
import logging
from typing import Any

import pandas as pd

from officina.platform.datasets import build_repo, repo
from officina.platform.datasets.archive import validate_name
from officina.platform.datasets.entities import DatasetFile
from officina.platform.datasets.ingest import ingest
from officina.platform.datasets.manifest import Manifest, ManifestEntry, manifest_key, sha256_bytes
from officina.platform.errors import Conflict, Invalid
from officina.platform.storage.blobs import BlobStore

logger = logging.getLogger(__name__)


def table_bytes(frame: pd.DataFrame, fmt: str) -> tuple[bytes, str]:
    """The frame as a ``csv`` or ``parquet`` file: (bytes, file extension)."""
    out = io.BytesIO()
    if fmt == "parquet":
        frame.to_parquet(out, index=False)
        return out.getvalue(), "parquet"
    if fmt == "csv":
        frame.to_csv(out, index=False)
        return out.getvalue(), "csv"
    raise Invalid(f"a table is stored as csv or parquet, not {fmt!r}", field="format")


def store_table(pool, blobs: BlobStore, *, team_id: int, dataset: str, frame: pd.DataFrame, fmt: str = "csv",
                user_id: int | None, label_column: str | None = None, message: str = "",
                origin: dict[str, Any] | None = None, parent_id: int | None = None) -> int:
    """Store ``frame`` as the next version of the team's tabular ``dataset`` (made if missing); return its number.

    Raises:
        Invalid: a bad dataset name or an empty table.
        Conflict: the dataset exists and holds another kind of data.
    """
    validate_name(dataset)
    if frame.empty:
        raise Invalid("the table has no rows; a version cannot be empty", field="rows")
    data, ext = table_bytes(frame, fmt)
    filename = f"{dataset}.{ext}"
    parsed = ingest(data, filename, kind="tabular",
                    label=label_column if label_column in frame.columns else None)
    sha = sha256_bytes(data)
    manifest = Manifest.build([ManifestEntry(filename, sha, len(data))])
    fields = dict(format=parsed.format, manifest_sha256=manifest.sha256, file_count=1, total_bytes=len(data),
                  row_count=parsed.row_count, label_column=parsed.label_column, text_column=None,
                  schema=parsed.schema, stats=parsed.stats, preview=parsed.preview, message=message,
                  origin=origin or {"source": "server"}, parent_id=parent_id)
    with pool.connection() as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock_shared(%s)", (build_repo.GC_LOCK,))
        try:
            blobs.put_bytes(data)
            if not blobs.store.exists(manifest_key(manifest.sha256)):
                blobs.store.put_bytes(manifest_key(manifest.sha256), manifest.to_json(), "application/json")
            number = _record(pool, team_id, dataset, fields, manifest, user_id, parent_id)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock_shared(%s)", (build_repo.GC_LOCK,))
    logger.info("dataset version stored team_id=%s dataset=%s version=%s rows=%s", team_id, dataset, number,
                parsed.row_count)
    return number


def _record(pool, team_id: int, dataset: str, fields: dict, manifest: Manifest, user_id: int | None,
            parent_id: int | None) -> int:
    with pool.connection() as conn, conn.transaction():
        repo.insert_dataset(conn, team_id, dataset, "tabular", user_id)
        found = repo.get_dataset(conn, team_id, dataset, lock=True)
        if found.kind != "tabular":
            raise Conflict(f"dataset {dataset!r} holds {found.kind} data; this version is a table", kind="tabular")
        number = repo.insert_version(conn, dataset_id=found.id, fields=fields, user_id=user_id)
        version_id = repo.version_id(conn, found.id, number)
        repo.insert_files(conn, version_id, [DatasetFile(e.path, e.sha256, e.size, e.label) for e in manifest.entries])
        if parent_id is not None:
            repo.record_lineage(conn, parent_id, "dataset_version", str(version_id), "parent")
    return number
