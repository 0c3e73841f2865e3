"""Records of the Data area."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class Dataset:
    id: int
    team_id: int
    name: str
    kind: str
    description: str
    created_at: datetime
    version_count: int
    latest: int | None


@dataclass(frozen=True)
class DatasetVersion:
    id: int
    dataset_id: int
    number: int
    format: str
    manifest_sha256: str
    file_count: int
    total_bytes: int
    row_count: int | None
    label_column: str | None
    text_column: str | None
    schema: list | None
    stats: dict
    preview: dict
    origin: dict
    message: str
    created_at: datetime
    tags: list[str]
    parent: int | None = None
    splits: dict | None = None
    split_sha256: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class DatasetFile:
    path: str
    sha256: str
    size: int
    label: str | None


@dataclass(frozen=True)
class Build:
    """The making of one version (upload, derive or split), with its status and progress."""

    id: str
    team_id: int
    team: str
    dataset: str
    op: str
    status: str
    params: dict
    progress: dict
    error: dict | None
    version: int | None
    bytes_received: int
    files_declared: int
    files_received: int
    created_at: datetime
    updated_at: datetime
    part_size: int = 0


@dataclass(frozen=True)
class BuildFile:
    path: str
    sha256: str
    size: int
    received: bool


def split_order(version: DatasetVersion) -> list[str]:
    """Split names in the order they were asked for (Postgres jsonb does not keep key order)."""
    recorded = (version.origin.get("split") or {}).get("order") or []
    names = list(version.splits or {})
    return [n for n in recorded if n in names] + [n for n in names if n not in recorded]


def ordered_splits(version: DatasetVersion) -> DatasetVersion:
    """The version with ``splits`` and ``origin.split.fractions`` in the order they were asked for."""
    if not version.splits:
        return version
    order = split_order(version)
    origin = dict(version.origin)
    split = dict(origin.get("split") or {})
    if isinstance(split.get("fractions"), dict):
        split["fractions"] = {n: split["fractions"][n] for n in order if n in split["fractions"]}
        origin["split"] = split
    return replace(version, splits={n: version.splits[n] for n in order}, origin=origin)
