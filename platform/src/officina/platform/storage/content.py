"""Content addresses: SHA-256 helpers and the S3 keys derived from a hash (no I/O here)."""
from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from officina.platform.errors import Invalid

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO, chunk: int = 1 << 20) -> tuple[str, int]:
    """Hex sha256 and byte count of a stream, read in chunks."""
    h, n = hashlib.sha256(), 0
    while block := stream.read(chunk):
        h.update(block)
        n += len(block)
    return h.hexdigest(), n


def check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA_RE.fullmatch(sha256):
        raise Invalid(f"{sha256!r} is not a lowercase hex sha256", field="sha256")
    return sha256


def blob_key(sha256: str) -> str:
    """The S3 key of a content-addressed blob: ``blobs/sha256/<aa>/<rest>``."""
    sha = check_sha(sha256)
    return f"blobs/sha256/{sha[:2]}/{sha[2:]}"


def manifest_key(sha256: str) -> str:
    """The S3 key of a manifest stored by its own hash: ``manifests/sha256/<aa>/<rest>.json``."""
    sha = check_sha(sha256)
    return f"manifests/sha256/{sha[:2]}/{sha[2:]}.json"
