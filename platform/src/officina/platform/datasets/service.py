"""Dataset services: upload a version, list and read datasets, versions and their files.

A version appears only when complete: blobs and the manifest are written to S3 first, then one
Postgres transaction records the version, its files and the moved ``latest`` tag.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict
from typing import Any

from psycopg_pool import ConnectionPool

from officina.platform.auth import repo as auth_repo
from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.datasets import build_repo, repo
from officina.platform.datasets.archive import validate_name
from officina.platform.datasets.entities import Dataset, DatasetFile, DatasetVersion, split_order
from officina.platform.datasets.formats import load_frame
from officina.platform.datasets.ingest import ingest
from officina.platform.datasets.manifest import Manifest, ManifestEntry, diff_rows, manifest_key, sha256_bytes
from officina.platform.datasets.manifest import diff as manifest_diff
from officina.platform.errors import Conflict, Invalid, NotFound
from officina.platform.storage.blobs import BlobStore
from officina.platform.storage.content import blob_key

logger = logging.getLogger(__name__)

LINEAGE_KINDS = ("run", "model_version", "dataset_version")
DIFF_LIST_LIMIT = 1000
ROW_DIFF_MAX_BYTES = 256 * 1024 * 1024
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def _check_tag(tag: Any) -> str:
    if tag == "latest":
        raise Invalid("the latest tag moves by itself with every new version; it cannot be set or removed",
                      field="tag")
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag) or tag.isdigit():
        raise Invalid(f"tag {tag!r} must be lowercase letters, digits, '.', '_' or '-' (not only digits), "
                      "at most 64 characters", field="tag")
    return tag


def _manifest(files: list[DatasetFile]) -> Manifest:
    return Manifest.build(ManifestEntry(f.path, f.sha256, f.size, f.label) for f in files)


class DatasetService:
    """Datasets of teams over the database pool and the blob store."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, auth: AuthService):
        self.pool, self.blobs, self.auth = pool, blobs, auth

    def upload(self, principal: Principal, team: str, name: str, filename: str, data: bytes, *,
               label: str | None = None, text: str | None = None, kind: str | None = None,
               message: str = "") -> DatasetVersion:
        """Parse an upload and store it as the dataset's next version (creating the dataset).

        Raises:
            NotFound / Forbidden: the caller may not write to the team.
            Invalid / TooLarge: bad input; nothing is recorded.
            Conflict: the dataset exists with another kind.
        """
        owner = self.auth.team(principal, team, Action.WRITE)
        validate_name(name)
        if not isinstance(message, str) or len(message) > 2000:
            raise Invalid("message must be text of at most 2000 characters", field="message")
        parsed = ingest(data, filename, kind=kind, label=label, text=text)
        # Hold the GC lock shared from the existence checks until the version commits.
        with self.pool.connection() as lock_conn:
            lock_conn.execute("SELECT pg_advisory_lock_shared(%s)", (build_repo.GC_LOCK,))
            try:
                return self._store_upload(principal, owner, team, name, filename, parsed, message)
            finally:
                lock_conn.execute("SELECT pg_advisory_unlock_shared(%s)", (build_repo.GC_LOCK,))

    def _store_upload(self, principal: Principal, owner, team: str, name: str, filename: str, parsed,
                      message: str) -> DatasetVersion:
        entries = []
        missing = self.blobs.missing(sha256_bytes(content) for content in parsed.files.values())
        new_blobs = len(missing)
        for path, content in parsed.files.items():
            sha = sha256_bytes(content)
            if sha in missing:
                self.blobs.put_bytes(content)
                missing.discard(sha)
            entries.append(ManifestEntry(path, sha, len(content), parsed.labels.get(path)))
        manifest = Manifest.build(entries)
        self.blobs.store.put_bytes(manifest_key(manifest.sha256), manifest.to_json(), "application/json")
        fields = dict(format=parsed.format, manifest_sha256=manifest.sha256, file_count=len(entries),
                      total_bytes=sum(e.size for e in entries), row_count=parsed.row_count,
                      label_column=parsed.label_column, text_column=parsed.text_column, schema=parsed.schema,
                      stats=parsed.stats, preview=parsed.preview, message=message,
                      origin={"source": "upload", "filename": filename})
        with self.pool.connection() as conn, conn.transaction():
            repo.insert_dataset(conn, owner.id, name, parsed.kind, principal.user.id)
            dataset = repo.get_dataset(conn, owner.id, name, lock=True)
            if dataset.kind != parsed.kind:
                raise Conflict(f"dataset {name!r} holds {dataset.kind} data; this upload is {parsed.kind}",
                               kind=parsed.kind)
            number = repo.insert_version(conn, dataset_id=dataset.id, fields=fields, user_id=principal.user.id)
            repo.insert_files(conn, repo.version_id(conn, dataset.id, number),
                              [DatasetFile(e.path, e.sha256, e.size, e.label) for e in manifest.entries])
            version = repo.get_version(conn, dataset.id, str(number))
        logger.info("dataset version created team=%s dataset=%s version=%s files=%s new_blobs=%s",
                    team, name, number, len(entries), new_blobs)
        return version

    def list(self, principal: Principal, team: str) -> list[Dataset]:
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            return repo.list_datasets(conn, owner.id)

    def get(self, principal: Principal, team: str, name: str) -> tuple[Dataset, list[DatasetVersion]]:
        """A dataset and its versions, newest first."""
        dataset = self._dataset(principal, team, name)
        with self.pool.connection() as conn:
            return dataset, repo.list_versions(conn, dataset.id)

    def version(self, principal: Principal, team: str, name: str, ref: str) -> tuple[DatasetVersion, list[DatasetFile]]:
        """A version by number or tag, with its files."""
        dataset = self._dataset(principal, team, name)
        with self.pool.connection() as conn:
            version = repo.get_version(conn, dataset.id, str(ref))
            if version is None:
                raise NotFound(f"dataset {name!r} has no version {ref!r}")
            return version, repo.list_files(conn, version.id)

    def read_file(self, principal: Principal, team: str, name: str, ref: str, path: str) -> bytes:
        """The bytes of one file of a version (verified against its hash)."""
        _, files = self.version(principal, team, name, ref)
        match = next((f for f in files if f.path == path), None)
        if match is None:
            raise NotFound(f"version {ref} of {name!r} has no file {path!r}")
        return self.blobs.get_bytes(match.sha256)

    def open_file(self, principal: Principal, team: str, name: str, ref: str, path: str):
        """One file of a version as (its record, an iterator of byte chunks) for streaming.

        The chunks are not verified here: a client checks them against the record's sha256.
        """
        _, files = self.version(principal, team, name, ref)
        match = next((f for f in files if f.path == path), None)
        if match is None:
            raise NotFound(f"version {ref} of {name!r} has no file {path!r}")
        response = self.blobs.store.open(blob_key(match.sha256))

        def chunks():
            try:
                yield from response.stream(1 << 20)
            finally:
                response.close()
                response.release_conn()

        return match, chunks()

    # -- tags ------------------------------------------------------------------------------------------
    def tags(self, principal: Principal, team: str, name: str) -> dict[str, int]:
        """Tag → version number."""
        dataset = self._dataset(principal, team, name)
        with self.pool.connection() as conn:
            return repo.tags(conn, dataset.id)

    def move_tag(self, principal: Principal, team: str, name: str, tag: str, ref: str) -> int:
        """Point a user tag (``golden``) at a version; return its number. ``latest`` moves by itself."""
        tag = _check_tag(tag)
        dataset = self._dataset(principal, team, name, Action.WRITE)
        with self.pool.connection() as conn, conn.transaction():
            version = repo.get_version(conn, dataset.id, str(ref)) if isinstance(ref, (str, int)) else None
            if version is None:
                raise NotFound(f"dataset {name!r} has no version {ref!r}")
            repo.move_tag(conn, dataset.id, tag, version.id, principal.user.id)
            auth_repo.insert_audit(conn, actor_id=principal.user.id, action="dataset.tag",
                                   target=f"dataset:{team}/{name}", detail={"tag": tag, "version": version.number})
        return version.number

    def delete_tag(self, principal: Principal, team: str, name: str, tag: str) -> None:
        tag = _check_tag(tag)
        dataset = self._dataset(principal, team, name, Action.WRITE)
        with self.pool.connection() as conn, conn.transaction():
            if not repo.delete_tag(conn, dataset.id, tag):
                raise NotFound(f"dataset {name!r} has no tag {tag!r}")
            auth_repo.insert_audit(conn, actor_id=principal.user.id, action="dataset.untag",
                                   target=f"dataset:{team}/{name}", detail={"tag": tag})

    # -- splits, diff, lineage ------------------------------------------------------------------------
    def splits(self, principal: Principal, team: str, name: str, ref: str) -> dict[str, list]:
        """The split assignment of a split version: split name → file paths or row numbers."""
        version, _ = self.version(principal, team, name, ref)
        if not version.split_sha256:
            raise NotFound(f"version {version.number} of {name!r} has no split; make one with POST …/split")
        splits = json.loads(self.blobs.get_bytes(version.split_sha256))["splits"]
        return {name: splits[name] for name in split_order(version) if name in splits}

    def diff(self, principal: Principal, team: str, name: str, from_ref: str, to_ref: str) -> dict[str, Any]:
        """Files added/removed/changed/relabeled, rows added/removed (single-table versions) and both stats."""
        if not from_ref or not to_ref:
            raise Invalid("give both versions: ?from=<ref>&to=<ref>", field="from" if not from_ref else "to")
        old, old_files = self.version(principal, team, name, from_ref)
        new, new_files = self.version(principal, team, name, to_ref)
        files = manifest_diff(_manifest(old_files), _manifest(new_files))
        cap = DIFF_LIST_LIMIT
        body: dict[str, Any] = {
            "from": old, "to": new,
            "files": {"added": [asdict(e) for e in files.added[:cap]],
                      "removed": [asdict(e) for e in files.removed[:cap]],
                      "changed": [{"path": a.path, "old": asdict(a), "new": asdict(b)} for a, b in files.changed[:cap]],
                      "relabeled": [{"path": a.path, "old_label": a.label, "new_label": b.label}
                                    for a, b in files.relabeled[:cap]],
                      "summary": {**files.summary(),
                                  "unchanged": len(old_files) - len(files.removed) - len(files.changed)
                                  - len(files.relabeled)}},
            "rows": None, "stats": {"from": old.stats, "to": new.stats},
        }
        tables = old.kind in ("tabular", "text") and len(old_files) == 1 and len(new_files) == 1
        if tables and max(old.total_bytes, new.total_bytes) <= ROW_DIFF_MAX_BYTES:
            frames = [load_frame(self.blobs.get_bytes(f[0].sha256), f[0].path, text=v.text_column, label=v.label_column)
                      for f, v in ((old_files, old), (new_files, new))]
            rows = diff_rows(*frames).to_dict()
            body["rows"] = {k: rows[k] for k in ("added", "removed", "unchanged", "columns_added", "columns_removed")}
        return body

    def lineage(self, principal: Principal, team: str, name: str, ref: str) -> dict[str, Any]:
        """Who used a version, which version it came from, and which versions came from it."""
        version, _ = self.version(principal, team, name, ref)
        with self.pool.connection() as conn:
            users = [u for u in repo.version_users(conn, version.id) if u["consumer_kind"] != "dataset_version"]
            return {"used_by": users,
                    "derived_from": {"dataset": name, "version": version.parent} if version.parent else None,
                    "derived": repo.derived_versions(conn, version.id)}

    def record_use(self, principal: Principal, team: str, name: str, ref: str, consumer_kind: Any,
                   consumer_id: Any, role: Any = "") -> dict[str, Any]:
        """Record that a run, model version or dataset version used this version (idempotent)."""
        if consumer_kind not in LINEAGE_KINDS:
            raise Invalid(f"consumer_kind must be one of {', '.join(LINEAGE_KINDS)}", field="consumer_kind")
        if not isinstance(consumer_id, (str, int)) or isinstance(consumer_id, bool) or not str(consumer_id).strip() \
                or len(str(consumer_id)) > 200:
            raise Invalid("consumer_id must be a non-empty id of at most 200 characters", field="consumer_id")
        if not isinstance(role, str) or len(role) > 64:
            raise Invalid("role must be text of at most 64 characters", field="role")
        self._dataset(principal, team, name, Action.WRITE)
        version, _ = self.version(principal, team, name, ref)
        with self.pool.connection() as conn:
            repo.record_lineage(conn, version.id, consumer_kind, str(consumer_id), role)
        return {"dataset": name, "version": version.number, "consumer_kind": consumer_kind,
                "consumer_id": str(consumer_id), "role": role}

    def used_by(self, principal: Principal, team: str, consumer_kind: Any, consumer_id: Any) -> list[dict]:
        """The dataset versions of a team that a run or model used."""
        if consumer_kind not in LINEAGE_KINDS:
            raise Invalid(f"consumer_kind must be one of {', '.join(LINEAGE_KINDS)}", field="consumer_kind")
        if not consumer_id:
            raise Invalid("consumer_id is required", field="consumer_id")
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            return repo.used_by_consumer(conn, owner.id, consumer_kind, str(consumer_id))

    def _dataset(self, principal: Principal, team: str, name: str, action: Action = Action.READ) -> Dataset:
        owner = self.auth.team(principal, team, action)
        with self.pool.connection() as conn:
            dataset = repo.get_dataset(conn, owner.id, name) if isinstance(name, str) else None
        if dataset is None:
            raise NotFound(f"dataset {name!r} not found in team {team!r}")
        return dataset
