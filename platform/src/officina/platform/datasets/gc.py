"""Garbage collection of the Data area's S3 objects.

Deletes blobs and manifests that no version and no unfinished build refers to, once they are older
than a grace period, and the staged parts of builds abandoned for longer than ``stale_after``.
It runs under the exclusive GC lock; writers that rely on a stored blob hold it shared, so a blob
found referenced-free here cannot become referenced until the collection ends.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from psycopg_pool import ConnectionPool

from officina.platform.datasets import build_repo
from officina.platform.storage.s3 import ObjectStore

logger = logging.getLogger(__name__)

GRACE = timedelta(hours=24)
STALE_AFTER = timedelta(days=7)


@dataclass(frozen=True)
class GcReport:
    blobs_deleted: int
    manifests_deleted: int
    parts_deleted: int
    builds_expired: int
    kept: int
    skipped: bool = False  # another collection or a running build held the lock


def _referenced(conn) -> tuple[set[str], set[str]]:
    blobs = {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM dataset_files")}
    blobs |= {r[0] for r in conn.execute("SELECT DISTINCT split_sha256 FROM dataset_versions"
                                         " WHERE split_sha256 IS NOT NULL")}
    blobs |= {r[0] for r in conn.execute(
        "SELECT DISTINCT f.sha256 FROM build_files f JOIN dataset_builds b ON b.id = f.build_id"
        " WHERE b.status IN ('open', 'queued', 'running')")}
    # Runs keep artifacts, models, logs, checkpoints and code bundles in the same blob space.
    for table in ("run_artifacts", "checkpoints", "code_bundles"):
        blobs |= {r[0] for r in conn.execute(f"SELECT DISTINCT sha256 FROM {table}")}
    # Model versions and their exports too.
    blobs |= {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM model_versions")}
    blobs |= {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM model_exports WHERE sha256 IS NOT NULL")}
    manifests = {r[0] for r in conn.execute("SELECT DISTINCT manifest_sha256 FROM dataset_versions")}
    return blobs, manifests


def _sha_of(key: str, prefix: str, suffix: str = "") -> str | None:
    rest = key[len(prefix):]
    if suffix:
        if not rest.endswith(suffix):
            return None
        rest = rest[: -len(suffix)]
    parts = rest.split("/")
    return parts[0] + parts[1] if len(parts) == 2 and len(parts[0]) == 2 else None


def collect_garbage(pool: ConnectionPool, store: ObjectStore, *, grace: timedelta = GRACE,
                    stale_after: timedelta = STALE_AFTER, now: datetime | None = None) -> GcReport:
    """Delete unreferenced blobs and manifests older than ``grace`` and the parts of stale builds."""
    now = now or datetime.now(timezone.utc)
    parts_deleted = expired = 0
    with pool.connection() as conn:
        for build_id in build_repo.stale_builds(conn, stale_after.total_seconds()):
            with conn.transaction():
                build_repo.set_status(conn, build_id, "aborted", progress={"phase": "expired"},
                                      error={"code": "expired", "message": "the upload was abandoned"},
                                      expect=("open",))
                keys = build_repo.delete_parts(conn, build_id)
            for key in keys:
                store.delete(key)
            parts_deleted += len(keys)
            expired += 1
    blobs_deleted = manifests_deleted = kept = 0
    with pool.connection() as conn, conn.transaction():
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (build_repo.GC_LOCK,)).fetchone()[0]:
            logger.info("gc skipped: builds or another collection hold the lock")
            return GcReport(0, 0, parts_deleted, expired, 0, skipped=True)
        blobs, manifests = _referenced(conn)
        for prefix, suffix, referenced in (("blobs/sha256/", "", blobs), ("manifests/sha256/", ".json", manifests)):
            for obj in store.client.list_objects(store.bucket, prefix=prefix, recursive=True):
                sha = _sha_of(obj.object_name, prefix, suffix)
                if sha is None or sha in referenced:
                    kept += 1
                    continue
                if obj.last_modified is not None and now - obj.last_modified < grace:
                    kept += 1
                    continue
                store.delete(obj.object_name)
                if suffix:
                    manifests_deleted += 1
                else:
                    blobs_deleted += 1
    report = GcReport(blobs_deleted, manifests_deleted, parts_deleted, expired, kept)
    logger.info("gc: %s", report)
    return report
