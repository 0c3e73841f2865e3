"""Dataset services: upload a version, list and read datasets, versions and their files.

A version appears only when complete: blobs and the manifest are written to S3 first, then one
Postgres transaction records the version, its files and the moved ``latest`` tag.
"""
from __future__ import annotations

import logging

from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.datasets import repo
from officina.platform.datasets.archive import validate_name
from officina.platform.datasets.entities import Dataset, DatasetFile, DatasetVersion
from officina.platform.datasets.ingest import ingest
from officina.platform.datasets.manifest import Manifest, ManifestEntry, manifest_key, sha256_bytes
from officina.platform.errors import Conflict, Invalid, NotFound
from officina.platform.storage.blobs import BlobStore

logger = logging.getLogger(__name__)


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

    def _dataset(self, principal: Principal, team: str, name: str) -> Dataset:
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            dataset = repo.get_dataset(conn, owner.id, name) if isinstance(name, str) else None
        if dataset is None:
            raise NotFound(f"dataset {name!r} not found in team {team!r}")
        return dataset
