"""Builds: how versions are made asynchronously — resumable uploads deduplicated by content hash,
derive (remove, relabel, filter) and split — with status and progress in Postgres.

The web side (this service) validates requests, receives bytes into content-addressed blobs and
queues the build; a worker on the ``io`` queue runs it (``officina.platform.datasets.builder``).
A build that fails leaves no version.
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.datasets import build_repo, repo
from officina.platform.datasets.archive import ArchiveLimits, iter_archive, validate_name, validate_relpath
from officina.platform.datasets.entities import Build, BuildFile, DatasetVersion
from officina.platform.datasets.filters import validate_filters
from officina.platform.datasets.split import validate_fractions
from officina.platform.errors import Conflict, Invalid, NotFound, TooLarge, Unavailable
from officina.platform.storage.blobs import BlobStore
from officina.platform.tasks import DATASET_BUILD
from officina.platform.storage.content import blob_key, check_sha

logger = logging.getLogger(__name__)

KINDS = ("tabular", "images", "text", "files")
MAX_DECLARE = 10_000
MAX_PART_SIZE = 32 * 1024 * 1024
BATCH_PUT_THREADS = 8


def part_key(build_id: str, path: str, part: int) -> str:
    """Where a staged part lives in S3 until its build assembles it."""
    return f"uploads/{build_id}/{hashlib.sha256(path.encode()).hexdigest()[:24]}/{part:05d}"


def _text(value: Any, field: str, limit: int = 200) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise Invalid(f"{field} must be text of at most {limit} characters", field=field)
    return value


def _paths(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise Invalid(f"{field} must be a list of file paths", field=field)
    return [validate_relpath(p, field_name=field) for p in value]


class BuildService:
    """Creates, feeds, queues and reports builds; ``send_task(name, args, queue)`` queues them."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, auth: AuthService,
                 send_task: Callable[[str, list, str], None], *, max_body: int, max_file: int):
        self.pool, self.blobs, self.auth, self._send = pool, blobs, auth, send_task
        self.max_file = max_file
        # A part plus the request's overhead must fit in one request body.
        self.part_size = max(1 << 20, min(MAX_PART_SIZE, max_body - (1 << 20)))

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, principal: Principal, build_id: str) -> Build:
        """A build the caller's team owns (404 otherwise)."""
        with self.pool.connection() as conn:
            build = build_repo.get_build(conn, build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} not found")
        self.auth.team(principal, build.team, Action.READ)
        return replace(build, part_size=self.part_size)

    def received(self, principal: Principal, build_id: str) -> tuple[list[BuildFile], dict[str, list[int]]]:
        """The files declared to an upload (with their received flag) and the parts staged per path."""
        build = self.get(principal, build_id)
        with self.pool.connection() as conn:
            files = build_repo.files(conn, build.id)
            parts = {path: [p[0] for p in rows] for path, rows in build_repo.parts(conn, build.id).items()}
        return files, parts

    def list(self, principal: Principal, team: str, name: str) -> list[Build]:
        """The dataset's most recent builds, newest first."""
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            return [replace(b, part_size=self.part_size) for b in build_repo.list_builds(conn, owner.id, name)]

    # -- uploads ---------------------------------------------------------------------------------------
    def create_upload(self, principal: Principal, team: str, name: str, options: dict[str, Any]) -> Build:
        """Open an upload build for the next version of ``name`` (the dataset is created on success)."""
        owner = self.auth.team(principal, team, Action.WRITE)
        validate_name(name)
        unknown = sorted(set(options) - {"kind", "label_column", "text_column", "message", "base", "remove"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
        kind = _text(options.get("kind"), "kind")
        if kind is not None and kind not in KINDS:
            raise Invalid(f"kind must be one of {', '.join(KINDS)}", field="kind")
        params: dict[str, Any] = {"kind": kind, "label_column": _text(options.get("label_column"), "label_column"),
                                  "text_column": _text(options.get("text_column"), "text_column"),
                                  "message": _text(options.get("message"), "message", 2000) or "",
                                  "remove": _paths(options.get("remove"), "remove")}
        base = options.get("base")
        with self.pool.connection() as conn, conn.transaction():
            dataset = repo.get_dataset(conn, owner.id, name)
            if dataset is not None and kind is not None and dataset.kind != kind:
                raise Conflict(f"dataset {name!r} holds {dataset.kind} data, not {kind}", kind=kind)
            if base is not None:
                if dataset is None:
                    raise NotFound(f"dataset {name!r} not found in team {team!r}; it has no base version")
                version = repo.get_version(conn, dataset.id, str(base))
                if version is None:
                    raise NotFound(f"dataset {name!r} has no version {base!r}")
                present = {f.path for f in repo.list_files(conn, version.id)}
                absent = [p for p in params["remove"] if p not in present]
                if absent:
                    raise Invalid(f"cannot remove {absent[0]!r}: version {version.number} has no such file",
                                  field="remove", paths=absent[:20])
                params["base"] = version.number
            elif params["remove"]:
                raise Invalid("remove needs a base version to remove files from", field="remove")
            build_id = build_repo.insert_build(conn, team_id=owner.id, dataset=name, op="upload", status="open",
                                               params=params, user_id=principal.user.id)
        return self.get(principal, build_id)

    def declare(self, principal: Principal, build_id: str, files: Any) -> dict[str, Any]:
        """Declare files by (path, sha256, size); those whose bytes the team holds are received at once.

        Returns ``{"missing": [paths to send], "received": count}``.
        """
        if not isinstance(files, list) or not files:
            raise Invalid("files must be a non-empty list of {path, sha256, size}", field="files")
        if len(files) > MAX_DECLARE:
            raise Invalid(f"declare at most {MAX_DECLARE} files per request", field="files")
        declared: dict[str, tuple[str, int]] = {}
        for item in files:
            if not isinstance(item, dict) or set(item) - {"path", "sha256", "size"}:
                raise Invalid("each file is {path, sha256, size}", field="files")
            path = validate_relpath(item.get("path"), field_name="path")
            sha = check_sha(item.get("sha256"))
            size = item.get("size")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise Invalid(f"size of {path!r} must be a non-negative integer", field="size", path=path)
            if size > self.max_file:
                raise TooLarge(f"{path!r} is {size} bytes; files may be at most {self.max_file} bytes "
                               "(OFFICINA_MAX_FILE)", path=path)
            if path in declared:
                raise Invalid(f"duplicate path {path!r} in one upload", field="path", path=path)
            declared[path] = (sha, size)
        with self.pool.connection() as conn, conn.transaction():
            build = self._open_build(conn, principal, build_id)
            existing = {f.path: f for f in build_repo.files(conn, build.id, list(declared))}
            for path, (sha, size) in declared.items():
                if path in existing and (existing[path].sha256, existing[path].size) != (sha, size):
                    raise Invalid(f"duplicate path {path!r}: it was declared with other content", field="path",
                                  path=path)
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (build_repo.GC_LOCK,))
            known = build_repo.known_hashes(conn, build.team_id, sorted({s for s, _ in declared.values()}))
            build_repo.upsert_files(conn, build.id, [(p, s, n, s in known) for p, (s, n) in declared.items()])
            rows = build_repo.files(conn, build.id, list(declared))
        missing = sorted(f.path for f in rows if not f.received)
        return {"missing": missing, "received": len(rows) - len(missing)}

    def put_file(self, principal: Principal, build_id: str, path: str, data: bytes, *,
                 sha256: str | None = None, part: int | None = None, parts: int | None = None) -> dict[str, Any]:
        """Receive a whole file (or one part of a large declared file) into the blob store."""
        path = validate_relpath(path, field_name="path")
        if sha256 is not None:
            sha256 = check_sha(sha256.lower())
        actual = hashlib.sha256(data).hexdigest()
        if sha256 is not None and actual != sha256:
            raise Invalid(f"the bytes received for {path!r} do not match X-Content-SHA256 (got {actual})",
                          field="X-Content-SHA256", path=path)
        if part is not None or parts is not None:
            return self._put_part(principal, build_id, path, data, actual, part, parts)
        with self.pool.connection() as conn, conn.transaction():
            build = self._open_build(conn, principal, build_id)
            existing = build_repo.files(conn, build.id, [path])
            if existing and existing[0].sha256 != actual:
                raise Invalid(f"the bytes received for {path!r} do not match the sha256 it was declared with",
                              field="path", path=path, declared=existing[0].sha256, received=actual)
            if existing and existing[0].size > len(data) and existing[0].size > self.part_size:
                raise Invalid(f"{path!r} is larger than part_size; send it in parts", field="part")
            # Shared with other writers, exclusive against GC: a blob seen here is not deleted under us.
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (build_repo.GC_LOCK,))
            self.blobs.store.put_bytes(blob_key(actual), data)  # same bytes, same key: idempotent
            build_repo.upsert_files(conn, build.id, [(path, actual, len(data), True)])
            build_repo.add_bytes(conn, build.id, len(data))
        return {"path": path, "sha256": actual, "size": len(data)}

    def put_batch(self, principal: Principal, build_id: str, data: bytes) -> dict[str, Any]:
        """Receive many small declared files at once, as an uncompressed tar whose entries are their paths.

        Every entry must be declared with the same sha256; nothing is recorded unless all are.
        """
        if not data:
            raise Invalid("the batch is empty", field="body")
        entries = {}
        for entry in iter_archive(data, ArchiveLimits(max_entries=MAX_DECLARE, max_file_size=self.part_size,
                                                      max_total_size=self.part_size * 4, max_ratio=1e9)):
            entries[entry.path] = entry.read()
        if not entries:
            raise Invalid("the batch holds no files", field="body")
        with self.pool.connection() as conn:
            build = self._open_build(conn, principal, build_id)
            declared = {f.path: f for f in build_repo.files(conn, build.id, list(entries))}
        hashes = {}
        for path, content in entries.items():
            sha = hashlib.sha256(content).hexdigest()
            if path not in declared:
                raise Invalid(f"{path!r} is not declared in this upload; declare it first", field="path", path=path)
            if declared[path].sha256 != sha:
                raise Invalid(f"the bytes received for {path!r} do not match the sha256 it was declared with",
                              field="path", path=path)
            hashes[path] = sha
        # Same bytes, same key: writing a blob that another upload just stored changes nothing.
        with ThreadPoolExecutor(max_workers=BATCH_PUT_THREADS) as pool:
            list(pool.map(lambda p: self.blobs.store.put_bytes(blob_key(hashes[p]), entries[p]), entries))
        with self.pool.connection() as conn, conn.transaction():
            self._open_build(conn, principal, build_id)
            build_repo.mark_received(conn, build.id, list(entries))
            build_repo.add_bytes(conn, build.id, sum(len(c) for c in entries.values()))
        return {"received": sorted(entries)}

    def _put_part(self, principal: Principal, build_id: str, path: str, data: bytes, sha: str,
                  part: int | None, parts: int | None) -> dict[str, Any]:
        if part is None or parts is None:
            raise Invalid("a part needs both part and parts", field="part")
        with self.pool.connection() as conn, conn.transaction():
            build = self._open_build(conn, principal, build_id)
            declared = build_repo.files(conn, build.id, [path])
            if not declared:
                raise Invalid(f"declare {path!r} (POST /builds/<id>/files) before sending its parts", field="path",
                              path=path)
            size = declared[0].size
            expected = max(1, math.ceil(size / self.part_size))
            if parts != expected:
                raise Invalid(f"{path!r} ({size} bytes) goes in {expected} parts of {self.part_size} bytes, "
                              f"not {parts}", field="parts", expected=expected)
            if not 1 <= part <= parts:
                raise Invalid(f"part must be between 1 and {parts}", field="part")
            want = self.part_size if part < parts else size - self.part_size * (parts - 1)
            if len(data) != want:
                raise Invalid(f"part {part} of {path!r} must be {want} bytes, got {len(data)}", field="part",
                              expected=want)
            key = part_key(build.id, path, part)
            self.blobs.store.put_bytes(key, data)
            build_repo.upsert_part(conn, build.id, path, part, parts, len(data), sha, key)
            build_repo.add_bytes(conn, build.id, len(data))
            received = [p[0] for p in build_repo.parts(conn, build.id).get(path, [])]
        return {"path": path, "part": part, "parts": parts, "received_parts": received}

    def commit(self, principal: Principal, build_id: str) -> Build:
        """Queue an upload whose declared files have all arrived (idempotent once queued)."""
        with self.pool.connection() as conn, conn.transaction():
            build = build_repo.get_build(conn, build_id, lock=True)
            if build is None:
                raise NotFound(f"build {build_id!r} not found")
            self.auth.team(principal, build.team, Action.WRITE)
            if build.op != "upload" or build.status in ("queued", "running", "done"):
                return self.get(principal, build_id)
            if build.status != "open":
                raise Conflict(f"build {build_id} is {build.status}; start a new upload", status=build.status)
            files = build_repo.files(conn, build.id)
            staged = build_repo.parts(conn, build.id)
            for f in files:
                if f.received:
                    continue
                got = staged.get(f.path, [])
                total = got[0][1] if got else None
                if not got or len(got) != total:
                    have = f"{len(got)} of {total} parts" if got else "no bytes"
                    raise Invalid(f"{f.path!r} has not arrived yet ({have}); send it before committing",
                                  field="files", path=f.path)
            if not files and build.params.get("base") is None:
                raise Invalid("the upload holds no files; declare and send some first", field="files")
            build_repo.set_status(conn, build.id, "queued", progress={"phase": "queued"})
        self._queue(build.id)
        return self.get(principal, build_id)

    def abort(self, principal: Principal, build_id: str) -> None:
        """Abort an open upload and drop its staged parts."""
        with self.pool.connection() as conn, conn.transaction():
            build = self._open_build(conn, principal, build_id)
            build_repo.set_status(conn, build.id, "aborted", progress={"phase": "aborted"})
            keys = build_repo.delete_parts(conn, build.id)
        self._delete_keys(keys)

    # -- derive and split ------------------------------------------------------------------------------
    def derive(self, principal: Principal, team: str, name: str, ref: str, spec: Any) -> Build:
        """Queue a version made from ``ref`` by removing or relabeling files, filtering rows or relabeling by column."""
        if not isinstance(spec, dict):
            raise Invalid("send a JSON object", field="body")
        unknown = sorted(set(spec) - {"remove", "relabel", "filter", "label_column", "message"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
        version, files, kind = self._source(principal, team, name, ref)
        present = {f.path for f in files}
        remove = _paths(spec.get("remove"), "remove")
        relabel = spec.get("relabel") or {}
        if not isinstance(relabel, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                    for k, v in relabel.items()):
            raise Invalid("relabel maps file paths to labels (text)", field="relabel")
        filters = validate_filters(spec.get("filter"), [c["name"] for c in (version.schema or [])])
        label_column = _text(spec.get("label_column"), "label_column")
        if (remove or relabel) and kind in ("tabular", "text"):
            raise Invalid(f"a {kind} version is one table: filter its rows or choose its label_column instead",
                          field="remove" if remove else "relabel")
        if (filters or label_column) and kind not in ("tabular", "text"):
            raise Invalid(f"filter and label_column apply to tabular and text versions, not {kind}",
                          field="filter" if filters else "label_column")
        for path in [*remove, *relabel]:
            if path not in present:
                raise Invalid(f"version {version.number} has no file {path!r}", field="remove" if path in remove
                              else "relabel", path=path)
        if label_column is not None and label_column not in {c["name"] for c in version.schema or []}:
            raise Invalid(f"label column {label_column!r} does not exist", field="label_column")
        if not (remove or relabel or filters or label_column):
            raise Invalid("nothing to derive: give remove, relabel, filter or label_column", field="body")
        if remove and len(set(remove)) == len(present):
            raise Invalid("removing every file leaves an empty version", field="remove")
        params = {"from": version.number, "remove": remove, "relabel": relabel, "filter": filters,
                  "label_column": label_column, "message": _text(spec.get("message"), "message", 2000) or ""}
        return self._queued(principal, team, name, "derive", params)

    def split(self, principal: Principal, team: str, name: str, ref: str, spec: Any) -> Build:
        """Queue a version recording a seeded (stratified) train/val/test split of ``ref``."""
        if not isinstance(spec, dict):
            raise Invalid("send a JSON object", field="body")
        unknown = sorted(set(spec) - {"fractions", "seed", "stratify", "message"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
        fractions = validate_fractions(spec.get("fractions") or {"train": 0.8, "val": 0.1, "test": 0.1})
        for split_name in fractions:
            if len(split_name) > 32 or not split_name.replace("_", "").replace("-", "").isalnum():
                raise Invalid(f"split name {split_name!r} must be letters, digits, - or _", field="fractions")
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise Invalid(f"seed must be a non-negative integer, got {seed!r}", field="seed")
        stratify = spec.get("stratify", True)
        if not isinstance(stratify, bool):
            raise Invalid("stratify must be true or false", field="stratify")
        version, _, _ = self._source(principal, team, name, ref)
        params = {"from": version.number, "fractions": fractions, "order": list(fractions), "seed": seed,
                  "stratify": stratify,
                  "message": _text(spec.get("message"), "message", 2000) or ""}
        return self._queued(principal, team, name, "split", params)

    # -- helpers ---------------------------------------------------------------------------------------
    def _source(self, principal: Principal, team: str, name: str, ref: str) -> tuple[DatasetVersion, list, str]:
        owner = self.auth.team(principal, team, Action.WRITE)
        with self.pool.connection() as conn:
            dataset = repo.get_dataset(conn, owner.id, name) if isinstance(name, str) else None
            if dataset is None:
                raise NotFound(f"dataset {name!r} not found in team {team!r}")
            version = repo.get_version(conn, dataset.id, str(ref))
            if version is None:
                raise NotFound(f"dataset {name!r} has no version {ref!r}")
            return version, repo.list_files(conn, version.id), dataset.kind

    def _queued(self, principal: Principal, team: str, name: str, op: str, params: dict) -> Build:
        owner = self.auth.team(principal, team, Action.WRITE)
        with self.pool.connection() as conn, conn.transaction():
            build_id = build_repo.insert_build(conn, team_id=owner.id, dataset=name, op=op, status="queued",
                                               params=params, user_id=principal.user.id)
        self._queue(build_id)
        return self.get(principal, build_id)

    def _queue(self, build_id: str) -> None:
        try:
            self._send(DATASET_BUILD, [build_id], "io")
        except Exception as exc:
            with self.pool.connection() as conn:
                build_repo.set_status(conn, build_id, "failed", progress={"phase": "failed"},
                                      error={"code": "unavailable", "message": f"could not queue the build: {exc}"})
            raise Unavailable(f"could not queue the build; is the broker up? ({exc.__class__.__name__})") from None

    def _open_build(self, conn, principal: Principal, build_id: str) -> Build:
        build = build_repo.get_build_lean(conn, build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} not found")
        self.auth.team(principal, build.team, Action.WRITE)
        if build.op != "upload" or build.status != "open":
            raise Conflict(f"build {build_id} is {build.status}; it no longer takes files", status=build.status)
        return build

    def _delete_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                self.blobs.store.delete(key)
            except Exception:  # GC retries what is left
                logger.warning("could not delete staged part %s", key, exc_info=True)
