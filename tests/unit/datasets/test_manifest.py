"""Manifests: canonical JSON and hash, validation, file diffs, row diffs and blob keys."""
from __future__ import annotations

import hashlib
import io

import pandas as pd
import pytest

from officina.platform.datasets.formats import read_csv
from officina.platform.datasets.manifest import (Manifest, ManifestEntry, blob_key, diff, diff_rows,
                                                 manifest_key, sha256_bytes, sha256_stream)
from officina.platform.errors import Invalid


def digits_manifest(digits_files, limit=300) -> Manifest:
    return Manifest.build(ManifestEntry(p, sha256_bytes(d), len(d), label)
                          for p, (label, d) in list(digits_files.items())[:limit])


def test_canonical_json_is_stable_and_hashed(digits_files):
    m = digits_manifest(digits_files)
    shuffled = Manifest.build(reversed(m.entries))
    assert shuffled.to_json() == m.to_json() and shuffled.sha256 == m.sha256
    assert m.sha256 == hashlib.sha256(m.to_json()).hexdigest()
    assert Manifest.from_json(m.to_json()) == m
    assert m.to_json().startswith(b'{"entries":[{"label":"0","path":"0/0000.png","sha256":')
    unlabeled = Manifest.build([ManifestEntry("a.csv", "0" * 64, 1)])
    assert b"label" not in unlabeled.to_json()


def test_manifest_refuses_bad_entries():
    sha = "a" * 64
    with pytest.raises(Invalid, match="more than once"):
        Manifest.build([ManifestEntry("a/x.png", sha, 1), ManifestEntry("a//x.png", sha, 1)])
    with pytest.raises(Invalid, match="'..'"):
        Manifest.build([ManifestEntry("../x.png", sha, 1)])
    with pytest.raises(Invalid, match="sha256"):
        Manifest.build([ManifestEntry("x.png", "A" * 64, 1)])
    with pytest.raises(Invalid, match="non-negative"):
        Manifest.build([ManifestEntry("x.png", sha, -1)])
    with pytest.raises(Invalid, match="malformed"):
        Manifest.from_json(b'{"version": 1, "entries": [{"path": "x"}]}')
    with pytest.raises(Invalid, match="version"):
        Manifest.from_json(b'{"version": 9, "entries": []}')


def test_diff_added_removed_changed_relabeled(digits_files):
    old = digits_manifest(digits_files)
    entries = {e.path: e for e in old.entries}
    first, second, third = sorted(entries)[:3]
    del entries[first]
    entries[second] = ManifestEntry(second, "f" * 64, 10, entries[second].label)
    entries[third] = ManifestEntry(third, entries[third].sha256, entries[third].size, "7")
    entries["new/1.png"] = ManifestEntry("new/1.png", "e" * 64, 5, "new")
    d = diff(old, Manifest.build(entries.values()))
    assert d.summary() == {"added": 1, "removed": 1, "changed": 1, "relabeled": 1}
    assert d.added[0].path == "new/1.png" and d.removed[0].path == first
    assert d.changed[0][1].sha256 == "f" * 64 and d.relabeled[0][1].label == "7"
    assert diff(old, old).summary() == {"added": 0, "removed": 0, "changed": 0, "relabeled": 0}
    assert d.to_dict()["summary"]["added"] == 1


def test_row_diff_on_wine(wine_csv):
    old = read_csv(wine_csv)
    new = old.drop(index=[0, 5]).reset_index(drop=True)
    changed = old.iloc[[3]].copy()
    changed["alcohol"] = 99.0
    new = pd.concat([new, old.iloc[[10]], changed], ignore_index=True)  # a duplicate row counts as added
    rd = diff_rows(old, new)
    assert (rd.added, rd.removed, rd.unchanged) == (2, 2, 176)
    assert rd.removed_rows == [0, 5]
    assert rd.columns_added == [] and rd.columns_removed == []
    reordered = diff_rows(old, old.sample(frac=1, random_state=0))
    assert (reordered.added, reordered.removed) == (0, 0)
    fewer = diff_rows(old, old.drop(columns=["alcohol"]))
    assert fewer.columns_removed == ["alcohol"]


def test_blob_and_manifest_keys():
    sha = sha256_bytes(b"hello")
    assert blob_key(sha) == f"blobs/sha256/{sha[:2]}/{sha[2:]}"
    assert manifest_key(sha) == f"manifests/sha256/{sha[:2]}/{sha[2:]}.json"
    with pytest.raises(Invalid):
        blob_key("../../etc/passwd")
    assert sha256_stream(io.BytesIO(b"hello")) == (sha, 5)
