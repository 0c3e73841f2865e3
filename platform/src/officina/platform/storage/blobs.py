"""Content-addressed blobs: bytes stored once under ``blobs/sha256/<aa>/<rest>``.

A blob's key is derived from its hash, so writing the same bytes twice changes nothing and a
reader can verify what it got. Writers hash first, then send only what the store lacks.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from officina.platform.errors import Invalid
from officina.platform.storage.content import blob_key, sha256_stream
from officina.platform.storage.s3 import ObjectStore

CHUNK = 1024 * 1024


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    """Hash a seekable stream from its current position; return (hex digest, size) and rewind."""
    start = stream.tell()
    digest = sha256_stream(stream, CHUNK)
    stream.seek(start)
    return digest


class BlobStore:
    """Blobs in one bucket, addressed by content."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def exists(self, sha256: str) -> bool:
        return self.store.exists(blob_key(sha256))

    def missing(self, hashes: Iterable[str], *, parallel: int = 8) -> set[str]:
        """The hashes among ``hashes`` that the store does not hold yet."""
        unique = sorted(set(hashes))
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            present = list(pool.map(self.exists, unique))
        return {sha for sha, here in zip(unique, present) if not here}

    def put(self, stream: BinaryIO, *, expected_sha256: str | None = None) -> tuple[str, int, bool]:
        """Store a seekable stream's bytes; return (sha256, size, written) where ``written`` is
        False when the blob was already there.

        Raises:
            Invalid: the bytes do not match ``expected_sha256``.
        """
        sha, size = sha256_of(stream)
        if expected_sha256 is not None and sha != expected_sha256:
            raise Invalid(f"content hash mismatch: expected {expected_sha256}, got {sha}", sha256="mismatch")
        if self.exists(sha):
            return sha, size, False
        self.store.put_stream(blob_key(sha), stream, size)
        return sha, size, True

    def put_bytes(self, data: bytes) -> tuple[str, bool]:
        """Store bytes; return (sha256, written)."""
        sha = hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            return sha, False
        self.store.put_bytes(blob_key(sha), data)
        return sha, True

    def get_bytes(self, sha256: str) -> bytes:
        """A blob's bytes, verified against its hash."""
        data = self.store.get_bytes(blob_key(sha256))
        if hashlib.sha256(data).hexdigest() != sha256:
            raise IOError(f"blob {sha256} is corrupt in the object store")
        return data
