"""Manifests of dataset versions: path → (sha256, size, label), canonical JSON, diffs, and content-addressed keys."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from officina.platform.datasets.archive import validate_relpath
from officina.platform.errors import Invalid
from officina.platform.storage.content import (blob_key, check_sha, manifest_key, sha256_bytes,  # noqa: F401
                                                sha256_stream)

MANIFEST_VERSION = 1


@dataclass(frozen=True, order=True)
class ManifestEntry:
    """One file of a version: its relative path, content hash, size in bytes and optional label."""

    path: str
    sha256: str
    size: int
    label: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The immutable file list of a dataset version, sorted by path, with no duplicate paths."""

    entries: tuple[ManifestEntry, ...] = field(default_factory=tuple)

    @classmethod
    def build(cls, entries: Iterable[ManifestEntry]) -> Manifest:
        """Validate paths, hashes and sizes, reject duplicate paths, and sort by path."""
        checked: dict[str, ManifestEntry] = {}
        for e in entries:
            path = validate_relpath(e.path)
            if path in checked:
                raise Invalid(f"manifest lists {path!r} more than once", field="path", path=path)
            if not isinstance(e.size, int) or isinstance(e.size, bool) or e.size < 0:
                raise Invalid(f"size of {path!r} must be a non-negative integer", field="size", path=path)
            if e.label is not None and not isinstance(e.label, str):
                raise Invalid(f"label of {path!r} must be a string", field="label", path=path)
            checked[path] = ManifestEntry(path, check_sha(e.sha256), e.size, e.label)
        return cls(tuple(sorted(checked.values(), key=lambda e: e.path)))

    def to_json(self) -> bytes:
        """Canonical JSON: sorted keys and entries, no whitespace, UTF-8; equal manifests give equal bytes."""
        doc = {"version": MANIFEST_VERSION,
               "entries": [{k: v for k, v in asdict(e).items() if v is not None} for e in self.entries]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON: the manifest's identity."""
        return sha256_bytes(self.to_json())

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse and validate a manifest written by ``to_json``."""
        try:
            doc = json.loads(data)
            if doc.get("version") != MANIFEST_VERSION:
                raise Invalid(f"unsupported manifest version {doc.get('version')!r}", field="manifest")
            return cls.build(ManifestEntry(d["path"], d["sha256"], d["size"], d.get("label")) for d in doc["entries"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Invalid(f"manifest is malformed: {exc}", field="manifest") from None

    def by_path(self) -> dict[str, ManifestEntry]:
        """Entries keyed by path."""
        return {e.path: e for e in self.entries}

    @property
    def total_size(self) -> int:
        """Sum of the entries' sizes."""
        return sum(e.size for e in self.entries)

    def hashes(self) -> set[str]:
        """The distinct blob hashes the manifest refers to."""
        return {e.sha256 for e in self.entries}


@dataclass(frozen=True)
class ManifestDiff:
    """Files added, removed, changed (same path, other bytes) and relabeled (same bytes, other label)."""

    added: list[ManifestEntry]
    removed: list[ManifestEntry]
    changed: list[tuple[ManifestEntry, ManifestEntry]]
    relabeled: list[tuple[ManifestEntry, ManifestEntry]]

    def summary(self) -> dict[str, int]:
        """Counts of each kind of change."""
        return {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed),
                "relabeled": len(self.relabeled)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: entries as dicts, pairs as ``{"old", "new"}``."""
        return {"summary": self.summary(), "added": [asdict(e) for e in self.added],
                "removed": [asdict(e) for e in self.removed],
                "changed": [{"old": asdict(a), "new": asdict(b)} for a, b in self.changed],
                "relabeled": [{"old": asdict(a), "new": asdict(b)} for a, b in self.relabeled]}


def diff(old: Manifest, new: Manifest) -> ManifestDiff:
    """Compare two manifests path by path."""
    a, b = old.by_path(), new.by_path()
    added = [b[p] for p in sorted(b.keys() - a.keys())]
    removed = [a[p] for p in sorted(a.keys() - b.keys())]
    changed, relabeled = [], []
    for p in sorted(a.keys() & b.keys()):
        if a[p].sha256 != b[p].sha256:
            changed.append((a[p], b[p]))
        elif a[p].label != b[p].label:
            relabeled.append((a[p], b[p]))
    return ManifestDiff(added, removed, changed, relabeled)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's values (column order and dtypes matter, the index does not)."""
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


@dataclass(frozen=True)
class RowDiff:
    """Rows added and removed between two tables (as multisets of row hashes), with positions in each table."""

    added: int
    removed: int
    unchanged: int
    added_rows: list[int]
    removed_rows: list[int]
    columns_added: list[str]
    columns_removed: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (positions capped at 1000 each)."""
        d = asdict(self)
        d["added_rows"], d["removed_rows"] = self.added_rows[:1000], self.removed_rows[:1000]
        return d


def diff_rows(old: pd.DataFrame, new: pd.DataFrame) -> RowDiff:
    """Rows added and removed between two tables, compared on their shared columns by row hash."""
    cols_old, cols_new = [str(c) for c in old.columns], [str(c) for c in new.columns]
    shared = [c for c in cols_new if c in set(cols_old)]
    h_old = row_hashes(old[shared]) if shared else np.zeros(len(old), np.uint64)
    h_new = row_hashes(new[shared]) if shared else np.zeros(len(new), np.uint64)
    keep_old, keep_new = _multiset_match(h_old, h_new)
    removed_rows = np.flatnonzero(~keep_old).tolist()
    added_rows = np.flatnonzero(~keep_new).tolist()
    return RowDiff(len(added_rows), len(removed_rows), int(keep_new.sum()), added_rows, removed_rows,
                   [c for c in cols_new if c not in set(cols_old)], [c for c in cols_old if c not in set(cols_new)])


def _multiset_match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the elements of ``a`` and ``b`` matched one-to-one with an equal element of the other."""
    def occurrence(h: np.ndarray) -> np.ndarray:
        order = np.argsort(h, kind="stable")
        sorted_h = h[order]
        starts = np.r_[0, np.flatnonzero(sorted_h[1:] != sorted_h[:-1]) + 1] if len(h) else np.array([], int)
        rank = np.arange(len(h)) - np.repeat(starts, np.diff(np.r_[starts, len(h)]))
        occ = np.empty(len(h), np.int64)
        occ[order] = rank
        return occ

    ka = pd.MultiIndex.from_arrays([a, occurrence(a)])
    kb = pd.MultiIndex.from_arrays([b, occurrence(b)])
    return ka.isin(kb), kb.isin(ka)
