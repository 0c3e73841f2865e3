"""Content-addressed blobs on the real S3 server."""
from __future__ import annotations

import hashlib
import io

import pytest
from sklearn.datasets import load_wine

from officina.platform.errors import Invalid
from officina.platform.storage.blobs import BlobStore, blob_key


@pytest.fixture
def blobs(live_stack):
    return BlobStore(live_stack.services.store)


def _wine_csv() -> bytes:
    data = load_wine(as_frame=True).frame
    return data.to_csv(index=False).encode()


def test_same_bytes_are_stored_once(blobs, live_stack):
    payload = _wine_csv()
    sha, size, written = blobs.put(io.BytesIO(payload))
    assert sha == hashlib.sha256(payload).hexdigest() and size == len(payload)
    assert blobs.put(io.BytesIO(payload)) == (sha, size, False)  # the second write sends nothing
    assert blobs.get_bytes(sha) == payload
    assert live_stack.services.store.exists(f"blobs/sha256/{sha[:2]}/{sha[2:]}")


def test_missing_lists_only_absent_hashes(blobs):
    present, _ = blobs.put_bytes(b"present " + _wine_csv()[:100])
    absent = hashlib.sha256(b"never stored anywhere").hexdigest()
    assert blobs.missing([present, absent, absent]) == {absent}


def test_hash_mismatch_and_bad_keys_are_refused(blobs):
    with pytest.raises(Invalid, match="hash mismatch"):
        blobs.put(io.BytesIO(b"abc"), expected_sha256="0" * 64)
    for bad in ("../etc/passwd", "ABC", "0" * 63, 5):
        with pytest.raises(Invalid):
            blob_key(bad)
