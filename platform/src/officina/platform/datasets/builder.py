"""Running builds on a worker: assemble uploaded parts, parse, compute statistics, save the version.

Every build ends ``done`` with its version number or ``failed`` with an error naming the problem;
the version appears in one Postgres transaction, after its blobs and manifest are in S3. While a
build runs it holds the GC lock shared, so garbage collection never deletes a blob it relies on.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import posixpath
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from psycopg_pool import ConnectionPool

from officina.platform.datasets import build_repo, repo
from officina.platform.datasets.archive import ArchiveLimits
from officina.platform.datasets.entities import Build, DatasetFile, DatasetVersion
from officina.platform.datasets.filters import apply_filters
from officina.platform.datasets.formats import detect_format, is_image_path, label_image_files, load_frame
from officina.platform.datasets.ingest import Ingested, ingest
from officina.platform.datasets.manifest import Manifest, ManifestEntry
from officina.platform.datasets.split import split_items
from officina.platform.datasets.stats import file_stats, image_stats, label_distribution, thumbnails
from officina.platform.errors import Conflict, Invalid, OfficinaError
from officina.platform.storage.blobs import BlobStore
from officina.platform.storage.content import blob_key, manifest_key, sha256_bytes

logger = logging.getLogger(__name__)

FETCH_THREADS = 8
COMPOSE_MIN_PART = 5 * 1024 * 1024  # S3's smallest part for a server-side compose
THUMBNAILS = 32


class Progress:
    """Writes a build's progress to Postgres at most every ``interval`` seconds (always on a new phase)."""

    def __init__(self, pool: ConnectionPool, build_id: str, interval: float = 0.5):
        self.pool, self.build_id, self.interval = pool, build_id, interval
        self._phase, self._last = None, 0.0

    def __call__(self, phase: str, done: int = 0, total: int = 0, unit: str = "files") -> None:
        now = time.monotonic()
        if phase == self._phase and now - self._last < self.interval and done != total:
            return
        self._phase, self._last = phase, now
        with self.pool.connection() as conn:
            build_repo.set_progress(conn, self.build_id, {"phase": phase, "done": done, "total": total, "unit": unit})


class _Concat:
    """A read-only stream over staged S3 objects, one after the other."""

    def __init__(self, blobs: BlobStore, keys: list[str]):
        self.blobs, self.keys, self.current = blobs, list(keys), None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self.current is None:
                if not self.keys:
                    return b""
                self.current = self.blobs.store.open(self.keys.pop(0))
            data = self.current.read(n if n and n > 0 else None)
            if data:
                return data
            self.current.close()
            self.current.release_conn()
            self.current = None


class _LazyFiles(Mapping[str, bytes]):
    """Entries' bytes fetched from the blob store on first access."""

    def __init__(self, blobs: BlobStore, entries: Mapping[str, ManifestEntry]):
        self.blobs, self.entries = blobs, entries

    def __getitem__(self, path: str) -> bytes:
        return self.blobs.get_bytes(self.entries[path].sha256)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


class VersionBuilder:
    """Runs one build to completion (``run``); safe to call again for a redelivered task."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, *, limits: ArchiveLimits | None = None):
        self.pool, self.blobs, self.limits = pool, blobs, limits

    def run(self, build_id: str) -> str:
        """Run a queued build; return its final status."""
        with self.pool.connection() as conn:
            build = build_repo.get_build(conn, build_id)
            # A redelivered task (worker lost mid-build) finds it running and runs it again from the start.
            claimed = build is not None and build_repo.set_status(
                conn, build_id, "running", progress={"phase": "starting"}, expect=("queued", "running"))
        if not claimed:
            logger.info("build %s is not queued; nothing to do", build_id)
            return build.status if build else "missing"
        progress = Progress(self.pool, build_id)
        with self.pool.connection() as lock_conn:
            lock_conn.execute("SELECT pg_advisory_lock_shared(%s)", (build_repo.GC_LOCK,))
            try:
                number = {"upload": self._upload, "derive": self._derive, "split": self._split}[build.op](
                    build, progress)
            except OfficinaError as exc:
                self._fail(build_id, exc.code, exc.message)
                return "failed"
            except Exception:
                logger.exception("build %s failed", build_id)
                self._fail(build_id, "internal", "the build failed unexpectedly; the worker log has the details")
                return "failed"
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock_shared(%s)", (build_repo.GC_LOCK,))
        logger.info("build %s (%s) made version %s of %s", build_id, build.op, number, build.dataset)
        self._cleanup(build_id)
        return "done"

    # -- operations ------------------------------------------------------------------------------------
    def _upload(self, build: Build, progress: Progress) -> int:
        params = build.params
        with self.pool.connection() as conn:
            files = build_repo.files(conn, build.id)
            staged = build_repo.parts(conn, build.id)
            dataset = repo.get_dataset(conn, build.team_id, build.dataset)
            base_files: list[DatasetFile] = []
            base: DatasetVersion | None = None
            if params.get("base") is not None:
                base = repo.get_version(conn, dataset.id, str(params["base"])) if dataset else None
                if base is None:
                    raise Invalid(f"base version {params['base']} no longer exists", field="base")
                base_files = repo.list_files(conn, base.id)
        pending = [f for f in files if not f.received]
        total = sum(f.size for f in pending)
        done = 0
        for f in pending:
            self._assemble(build, f, staged.get(f.path, []), lambda n: progress("assembling", done + n, total,
                                                                                  "bytes"))
            done += f.size
        uploaded = {f.path: ManifestEntry(f.path, f.sha256, f.size) for f in files}
        entries = {f.path: ManifestEntry(f.path, f.sha256, f.size, f.label) for f in base_files}
        for path in params.get("remove", []):
            entries.pop(path, None)
        entries.update(uploaded)
        kind = params.get("kind") or (dataset.kind if dataset else None)
        archive = (len(entries) == 1 and base is None and kind in (None, "images")
                   and self._format(next(iter(entries.values()))) in ("zip", "tar"))
        if archive:
            entry = next(iter(entries.values()))
            progress("reading", 0, 1)
            parsed = ingest(self.blobs.get_bytes(entry.sha256), posixpath.basename(entry.path), kind=kind,
                            limits=self.limits)
            final, fields = self._store_extracted(parsed, progress)
            kind = parsed.kind
        else:
            kind = kind or self._infer_kind(entries)
            final, fields = self._parse(kind, entries, params, progress, relabel=set(uploaded))
        fields.update(message=params.get("message") or "",
                      origin={"source": "upload", "base": params.get("base"),
                              "removed": len(params.get("remove", []))})
        return self._save(build, kind, final, fields, parent=base)

    def _derive(self, build: Build, progress: Progress) -> int:
        params = build.params
        parent, parent_files, kind = self._parent(build)
        entries = {f.path: ManifestEntry(f.path, f.sha256, f.size, f.label) for f in parent_files}
        for path in params.get("remove", []):
            entries.pop(path, None)
        for path, label in (params.get("relabel") or {}).items():
            if path in entries:
                e = entries[path]
                entries[path] = ManifestEntry(e.path, e.sha256, e.size, label)
        label = params.get("label_column") or parent.label_column
        if kind in ("tabular", "text"):
            (entry,) = entries.values()
            data = self.blobs.get_bytes(entry.sha256)
            if params.get("filter"):
                progress("reading", 0, 1)
                data = self._filtered(data, entry.path, parent, params["filter"])
                sha = sha256_bytes(data)
                if not self.blobs.exists(sha):
                    self.blobs.store.put_bytes(blob_key(sha), data)
                entries = {entry.path: ManifestEntry(entry.path, sha, len(data))}
            final, fields = self._table(kind, entries, data, {"label_column": label,
                                                             "text_column": parent.text_column}, progress)
        else:
            final, fields = self._parse(kind, entries, {}, progress, relabel=set())
        fields.update(message=params.get("message") or "",
                      origin={"source": "derive", "from": parent.number, "removed": len(params.get("remove", [])),
                              "relabeled": len(params.get("relabel") or {}), "filter": params.get("filter") or [],
                              "label_column": params.get("label_column")})
        return self._save(build, kind, final, fields, parent=parent)

    def _split(self, build: Build, progress: Progress) -> int:
        params = build.params
        parent, files, kind = self._parent(build)
        if kind in ("tabular", "text"):
            progress("reading", 0, 1)
            (entry,) = files
            frame = load_frame(self.blobs.get_bytes(entry.sha256), entry.path, text=parent.text_column,
                               label=parent.label_column)
            items: list = list(range(len(frame)))
            labels = ([None if pd.isna(v) else str(v) for v in frame[parent.label_column]]
                      if parent.label_column in frame.columns else None)
        else:
            items = [f.path for f in files]
            labels = [f.label for f in files] if any(f.label is not None for f in files) else None
        progress("splitting", 0, len(items), "items")
        # jsonb does not keep key order: put the fractions back in the order they were asked for
        fractions = {n: params["fractions"][n] for n in params.get("order") or params["fractions"]}
        split = split_items(items, fractions, labels=labels, seed=params["seed"],
                            stratify=params["stratify"])
        by_item = dict(zip(items, labels or [None] * len(items)))
        assignment = {name: split.items(name) for name in split.counts}
        summary = {name: {"count": len(members),
                          "labels": label_distribution(by_item[m] for m in members) if labels else None}
                   for name, members in assignment.items()}
        doc = json.dumps({"version": 1, "params": split.params, "splits": assignment}, sort_keys=True,
                         separators=(",", ":")).encode()
        sha = sha256_bytes(doc)
        if not self.blobs.exists(sha):
            self.blobs.store.put_bytes(blob_key(sha), doc, "application/json")
        entries = [ManifestEntry(f.path, f.sha256, f.size, f.label) for f in files]
        fields = dict(format=parent.format, row_count=parent.row_count, label_column=parent.label_column,
                      text_column=parent.text_column, schema=parent.schema, stats=parent.stats,
                      preview=parent.preview, split_sha256=sha, splits=summary,
                      message=params.get("message") or "",
                      origin={"source": "split", "from": parent.number,
                              "split": {"fractions": fractions, "order": list(split.counts),
                                        "seed": params["seed"],
                                        "stratify": params["stratify"], "stratified": split.params["stratified"],
                                        "method": split.params["method"]}})
        return self._save(build, kind, entries, fields, parent=parent)

    # -- parsing ---------------------------------------------------------------------------------------
    def _format(self, entry: ManifestEntry) -> str:
        head = self.blobs.store.client.get_object(self.blobs.store.bucket, blob_key(entry.sha256), 0,
                                                  min(512, max(entry.size, 1)))
        try:
            data = head.read()
        finally:
            head.close()
            head.release_conn()
        try:
            return detect_format(posixpath.basename(entry.path), data)
        except Invalid:
            return "unknown"

    @staticmethod
    def _infer_kind(entries: Mapping[str, ManifestEntry]) -> str:
        paths = list(entries)
        images = [p for p in paths if is_image_path(p)]
        others = [p for p in paths if not is_image_path(p)]
        if images and (not others or (len(others) == 1 and others[0].lower().endswith(".csv"))):
            return "images"
        if len(paths) == 1:
            lower = paths[0].lower()
            if lower.endswith(".jsonl"):
                return "text"
            if lower.endswith((".csv", ".tsv", ".parquet")):
                return "tabular"
        return "files"

    def _parse(self, kind: str, entries: dict[str, ManifestEntry], params: dict, progress: Progress, *,
               relabel: set[str]) -> tuple[list[ManifestEntry], dict[str, Any]]:
        """Statistics and preview of ``entries`` as a version of ``kind``."""
        if kind == "files":
            final = sorted(entries.values())
            return final, dict(format="files", row_count=len(final), label_column=None, text_column=None,
                               schema=None, preview={},
                               stats=file_stats((e.path, e.size, e.label) for e in final))
        if kind == "images":
            return self._images(entries, progress, relabel)
        if len(entries) != 1:
            raise Invalid(f"a {kind} version is one file (CSV, Parquet or JSONL); this one would have "
                          f"{len(entries)}: {', '.join(sorted(entries)[:5])}", field="files")
        (entry,) = entries.values()
        progress("reading", 0, 1)
        return self._table(kind, entries, self.blobs.get_bytes(entry.sha256), params, progress)

    def _table(self, kind: str, entries: dict[str, ManifestEntry], data: bytes, params: dict,
               progress: Progress) -> tuple[list[ManifestEntry], dict[str, Any]]:
        (entry,) = entries.values()
        progress("stats", 0, 1)
        parsed = ingest(data, posixpath.basename(entry.path), kind=kind, label=params.get("label_column"),
                        text=params.get("text_column"))
        if parsed.kind != kind:
            raise Conflict(f"this data is {parsed.kind}, but the dataset holds {kind} data", kind=parsed.kind)
        return [entry], self._fields(parsed)

    def _images(self, entries: dict[str, ManifestEntry], progress: Progress,
                relabel: set[str]) -> tuple[list[ManifestEntry], dict[str, Any]]:
        """Images by class folder or labels CSV; labels already recorded on entries not in ``relabel`` are kept."""
        pairs = label_image_files(entries.keys(), _LazyFiles(self.blobs, entries))
        final = []
        for path, label in pairs:
            e = entries[path]
            keep = e.label if path not in relabel and e.label is not None else label
            final.append(ManifestEntry(path, e.sha256, e.size, keep))
        total = len(final)
        read: list[tuple[str, str | None, bytes]] = []  # the first images, for thumbnails

        def fetch(e: ManifestEntry) -> tuple[str, str | None, bytes]:
            return e.path, e.label, self.blobs.get_bytes(e.sha256)

        # Fetch in parallel; Pillow reads only each image's header for the statistics.
        stats_input: list[tuple[str, str | None, bytes]] = []
        with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
            for i, item in enumerate(pool.map(fetch, final), 1):
                stats_input.append(item)
                if len(read) < THUMBNAILS:
                    read.append(item)
                progress("reading", i, total)
        progress("stats", 0, 1)
        stats = image_stats(stats_input)
        stats["bytes"] = sum(e.size for e in final)
        thumbs = thumbnails([(p, d) for p, _, d in read], limit=THUMBNAILS)
        labels = {e.path: e.label for e in final}
        preview = {"thumbnails": [{"path": t["path"], "label": labels.get(t["path"]),
                                   "png_base64": base64.b64encode(t["png"]).decode()} for t in thumbs]}
        return final, dict(format="images", row_count=total, schema=None, stats=stats, preview=preview,
                           label_column="folder" if any(labels.values()) else None, text_column=None)

    def _store_extracted(self, parsed: Ingested, progress: Progress) -> tuple[list[ManifestEntry], dict[str, Any]]:
        entries, total = [], len(parsed.files)
        for i, (path, data) in enumerate(sorted(parsed.files.items()), 1):
            sha = sha256_bytes(data)
            if not self.blobs.exists(sha):
                self.blobs.store.put_bytes(blob_key(sha), data)
            entries.append(ManifestEntry(path, sha, len(data), parsed.labels.get(path)))
            progress("saving", i, total)
        return entries, self._fields(parsed)

    @staticmethod
    def _fields(parsed: Ingested) -> dict[str, Any]:
        return dict(format=parsed.format, row_count=parsed.row_count, label_column=parsed.label_column,
                    text_column=parsed.text_column, schema=parsed.schema, stats=parsed.stats, preview=parsed.preview)

    def _filtered(self, data: bytes, path: str, version: DatasetVersion, filters: list[dict]) -> bytes:
        frame = apply_filters(load_frame(data, path, text=version.text_column, label=version.label_column), filters)
        if frame.empty:
            raise Invalid("the filter keeps no rows; a version cannot be empty", field="filter")
        out = io.BytesIO()
        if version.format == "parquet":
            frame.to_parquet(out, index=False)
        elif version.format == "jsonl":
            frame.to_json(out, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(out, index=False, sep="\t" if path.lower().endswith(".tsv") else ",")
        return out.getvalue()

    # -- storing ---------------------------------------------------------------------------------------
    def _assemble(self, build: Build, f, parts: list[tuple], report) -> None:
        """Check a large file's staged parts against its declared hash, then store it as one blob."""
        if not parts or len(parts) != parts[0][1]:
            raise Invalid(f"{f.path!r} is incomplete: {len(parts)} of {parts[0][1] if parts else '?'} parts",
                          field="files", path=f.path)
        digest, seen = hashlib.sha256(), 0
        stream = _Concat(self.blobs, [p[4] for p in parts])
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            seen += len(chunk)
            report(seen)
        if digest.hexdigest() != f.sha256 or seen != f.size:
            raise Invalid(f"the parts of {f.path!r} put together do not match its declared sha256 and size",
                          field="files", path=f.path)
        if not self.blobs.exists(f.sha256):
            keys = [p[4] for p in parts]
            if all(p[2] >= COMPOSE_MIN_PART for p in parts[:-1]):
                self.blobs.store.compose(blob_key(f.sha256), keys)  # server-side: no bytes through here
            else:
                self.blobs.store.put_stream(blob_key(f.sha256), _Concat(self.blobs, keys), f.size)
        report(f.size)
        with self.pool.connection() as conn:
            build_repo.mark_received(conn, build.id, [f.path])

    def _parent(self, build: Build) -> tuple[DatasetVersion, list[DatasetFile], str]:
        with self.pool.connection() as conn:
            dataset = repo.get_dataset(conn, build.team_id, build.dataset)
            parent = repo.get_version(conn, dataset.id, str(build.params["from"])) if dataset else None
            if parent is None:
                raise Invalid(f"version {build.params['from']} of {build.dataset!r} no longer exists", field="from")
            return parent, repo.list_files(conn, parent.id), dataset.kind

    def _save(self, build: Build, kind: str, entries: list[ManifestEntry], fields: dict[str, Any], *,
              parent: DatasetVersion | None) -> int:
        """Write the manifest, then record the version, its files, tags and lineage in one transaction."""
        manifest = Manifest.build(entries)
        if not self.blobs.store.exists(manifest_key(manifest.sha256)):
            self.blobs.store.put_bytes(manifest_key(manifest.sha256), manifest.to_json(), "application/json")
        fields = dict(fields, manifest_sha256=manifest.sha256, file_count=len(manifest.entries),
                      total_bytes=manifest.total_size, parent_id=parent.id if parent else None)
        with self.pool.connection() as conn, conn.transaction():
            user_id = conn.execute("SELECT created_by FROM dataset_builds WHERE id = %s", (build.id,)).fetchone()[0]
            repo.insert_dataset(conn, build.team_id, build.dataset, kind, user_id)
            dataset = repo.get_dataset(conn, build.team_id, build.dataset, lock=True)
            if dataset.kind != kind:
                raise Conflict(f"dataset {build.dataset!r} holds {dataset.kind} data; this version is {kind}",
                               kind=kind)
            number = repo.insert_version(conn, dataset_id=dataset.id, fields=fields, user_id=user_id)
            version_id = repo.version_id(conn, dataset.id, number)
            repo.insert_files(conn, version_id, [DatasetFile(e.path, e.sha256, e.size, e.label)
                                                 for e in manifest.entries])
            if parent is not None:
                repo.record_lineage(conn, parent.id, "dataset_version", str(version_id), "parent")
            if not build_repo.set_status(conn, build.id, "done", progress={"phase": "done"}, version=number,
                                         expect=("running",)):
                raise Conflict(f"build {build.id} was stopped while it ran")
        return number

    def _fail(self, build_id: str, code: str, message: str) -> None:
        with self.pool.connection() as conn:
            build_repo.set_status(conn, build_id, "failed", progress={"phase": "failed"},
                                  error={"code": code, "message": message})
        logger.info("build %s failed: %s", build_id, message)
        self._cleanup(build_id)

    def _cleanup(self, build_id: str) -> None:
        with self.pool.connection() as conn:
            keys = build_repo.delete_parts(conn, build_id)
        for key in keys:
            try:
                self.blobs.store.delete(key)
            except Exception:  # GC removes what is left
                logger.warning("could not delete staged part %s", key, exc_info=True)
