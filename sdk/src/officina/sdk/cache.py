"""The SDK's local cache: file hashes, downloaded blobs, and open uploads to resume.

Everything lives under ``$OFFICINA_CACHE_DIR`` (default ``~/.cache/officina``):

- ``hashes.sqlite3``: sha256 of local files keyed by absolute path, size, mtime_ns and inode, so an
  unchanged file is never hashed twice; plus the builds left open by interrupted uploads.
- ``blobs/sha256/<aa>/<rest>``: downloaded file contents by hash, verified on download and
  written atomically (temp file + rename), shared by every version that holds the same bytes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path       TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    inode      INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    part_size  INTEGER,
    parts      TEXT
);
CREATE TABLE IF NOT EXISTS open_builds (
    key        TEXT PRIMARY KEY,
    build_id   TEXT NOT NULL,
    params     TEXT NOT NULL
);
"""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``override``, else ``$OFFICINA_CACHE_DIR``, else ``~/.cache/officina``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("OFFICINA_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "officina"


@dataclass(frozen=True)
class FileHash:
    """The content address of one local file; ``parts`` are the sha256 of each ``part_size`` slice."""

    sha256: str
    size: int
    parts: tuple[str, ...] | None = None


def hash_file(path: str | os.PathLike, part_size: int | None = None) -> FileHash:
    """Hash a file in one streaming pass; with ``part_size`` (and a larger file) hash each part too."""
    whole = hashlib.sha256()
    parts: list[str] = []
    part = hashlib.sha256()
    in_part = 0
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            whole.update(block)
            size += len(block)
            if part_size:
                view = memoryview(block)
                while view:
                    take = min(len(view), part_size - in_part)
                    part.update(view[:take])
                    in_part += take
                    view = view[take:]
                    if in_part == part_size:
                        parts.append(part.hexdigest())
                        part, in_part = hashlib.sha256(), 0
    if part_size and in_part:
        parts.append(part.hexdigest())
    split = tuple(parts) if part_size and size > part_size else None
    return FileHash(whole.hexdigest(), size, split)


class Cache:
    """The hash database and blob folder under one cache directory (safe across threads)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.dir = cache_dir(directory)
        self.blob_dir = self.dir / "blobs" / "sha256"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.hashed_files = 0  # files actually read to hash them (not served from the database)

    # -- the database ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.dir / "hashes.sqlite3", timeout=30, check_same_thread=False,
                                 isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def known_hashes(self, paths: Iterable[str]) -> dict[str, tuple]:
        """Rows for these absolute paths: ``path → (size, mtime_ns, inode, sha256, part_size, parts)``."""
        wanted = list(paths)
        found: dict[str, tuple] = {}
        with self._lock:
            db = self._conn()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(f"SELECT path, size, mtime_ns, inode, sha256, part_size, parts "
                                      f"FROM file_hashes WHERE path IN ({marks})", chunk):
                    found[row[0]] = row[1:]
        return found

    def remember_hashes(self, rows: Iterable[tuple[str, os.stat_result, FileHash, int | None]]) -> None:
        """Store ``(absolute path, stat, hash, part_size)`` rows."""
        values = [(path, st.st_size, st.st_mtime_ns, st.st_ino, h.sha256, part_size if h.parts else None,
                   json.dumps(h.parts) if h.parts else None) for path, st, h, part_size in rows]
        if not values:
            return
        with self._lock:
            db = self._conn()
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?)", values)
            db.execute("COMMIT")

    def hash_files(self, files: list[tuple[str, os.stat_result]], part_size: int | None = None, *,
                   parallel: int = 4, on_hashed: Callable[[int], None] | None = None) -> dict[str, FileHash]:
        """Hashes of ``(absolute path, stat)`` files, read only where the database has no entry with
        the same size, mtime_ns and inode (or lacks the part hashes ``part_size`` now needs)."""
        from concurrent.futures import ThreadPoolExecutor

        known = self.known_hashes(path for path, _ in files)
        result: dict[str, FileHash] = {}
        todo: list[tuple[str, os.stat_result]] = []
        for path, st in files:
            row = known.get(path)
            if row and row[0] == st.st_size and row[1] == st.st_mtime_ns and row[2] == st.st_ino:
                needs_parts = bool(part_size) and st.st_size > part_size
                if not needs_parts:
                    result[path] = FileHash(row[3], st.st_size)
                    continue
                if row[4] == part_size and row[5]:
                    result[path] = FileHash(row[3], st.st_size, tuple(json.loads(row[5])))
                    continue
            todo.append((path, st))
        if on_hashed:
            on_hashed(sum(st.st_size for path, st in files if path in result))

        def work(item: tuple[str, os.stat_result]) -> tuple[str, os.stat_result, FileHash, bool]:
            path, before = item
            digest = hash_file(path, part_size)
            after = os.stat(path)
            stable = digest.size == after.st_size and \
                (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
            return path, after, digest, stable

        fresh = []
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for path, st, digest, stable in pool.map(work, todo):
                result[path] = digest
                self.hashed_files += 1
                if stable:  # a file that changed while being hashed is not remembered
                    fresh.append((path, st, digest, part_size))
                if on_hashed:
                    on_hashed(digest.size)
        self.remember_hashes(fresh)
        return result

    def open_build(self, key: str) -> tuple[str, dict] | None:
        """The build an interrupted upload left open under ``key``, with its parameters."""
        with self._lock:
            row = self._conn().execute("SELECT build_id, params FROM open_builds WHERE key = ?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def remember_build(self, key: str, build_id: str, params: dict) -> None:
        with self._lock:
            self._conn().execute("INSERT OR REPLACE INTO open_builds VALUES (?, ?, ?)",
                                 (key, build_id, json.dumps(params, sort_keys=True)))

    def forget_build(self, key: str) -> None:
        with self._lock:
            self._conn().execute("DELETE FROM open_builds WHERE key = ?", (key,))

    # -- blobs ----------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this hash is (or would be) kept."""
        return self.blob_dir / sha256[:2] / sha256[2:]

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def put_blob(self, sha256: str, chunks: Iterable[bytes]) -> Path:
        """Write a blob from ``chunks``, verifying its hash; atomic (temp file, then rename).

        Raises:
            IOError: the bytes received do not have the expected hash.
        """
        target = self.blob_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    fh.write(chunk)
            if digest.hexdigest() != sha256:
                raise IOError(f"downloaded bytes do not match sha256 {sha256} (got {digest.hexdigest()})")
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return target
