"""All S3 access goes through ``ObjectStore``, built on the ``minio`` client.

The server behind it is interchangeable: the embedded SeaweedFS, MinIO, or any S3 service.
"""
from __future__ import annotations

import io
import logging
from typing import BinaryIO, Iterator

import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource
from minio.error import S3Error

from officina.platform.errors import NotFound, Unavailable
from officina.platform.settings import Settings

logger = logging.getLogger(__name__)


def _http_client(timeout: float, read_timeout: float, retries: bool) -> urllib3.PoolManager:
    retry = urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]) if retries else False
    return urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout, read=read_timeout),
                               retries=retry, maxsize=16)


class ObjectStore:
    """A bucket on an S3 server."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str, *,
                 secure: bool = False, region: str | None = None, timeout: float = 10.0,
                 read_timeout: float = 60.0, retries: bool = True):
        """``retries=False`` with short timeouts makes a client for readiness probes."""
        self.bucket = bucket
        self.endpoint = endpoint
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                            region=region, http_client=_http_client(timeout, read_timeout, retries))

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 10.0, read_timeout: float = 60.0,
                      retries: bool = True) -> "ObjectStore":
        """The store configured by ``settings`` (its S3 endpoint, keys and bucket)."""
        if not settings.s3_endpoint or settings.s3_access_key is None or settings.s3_secret_key is None:
            raise Unavailable("S3 is not configured: set OFFICINA_S3_ENDPOINT and its keys")
        return cls(settings.s3_endpoint, settings.s3_access_key.get_secret_value(),
                   settings.s3_secret_key.get_secret_value(), settings.s3_bucket,
                   secure=settings.s3_secure, region=settings.s3_region, timeout=timeout,
                   read_timeout=read_timeout, retries=retries)

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist."""
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
                logger.info("created bucket %s", self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def ping(self) -> None:
        """Raise unless the bucket can be reached."""
        if not self.client.bucket_exists(self.bucket):
            raise Unavailable(f"bucket {self.bucket!r} does not exist")

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def put_stream(self, key: str, stream: BinaryIO, length: int = -1,
                   content_type: str = "application/octet-stream") -> None:
        """Upload from a file-like object (multipart when ``length`` is -1 or large)."""
        self.client.put_object(self.bucket, key, stream, length, content_type=content_type,
                               part_size=16 * 1024 * 1024 if length == -1 else 0)

    def compose(self, key: str, sources: list[str]) -> None:
        """Write ``key`` as the concatenation of ``sources``, server-side (S3 UploadPartCopy).

        Every source but the last must be at least 5 MiB (an S3 rule).
        """
        self.client.compose_object(self.bucket, key, [ComposeSource(self.bucket, source) for source in sources])

    def get_bytes(self, key: str) -> bytes:
        response = self._get(key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def open(self, key: str):
        """A streaming response for ``key``; close it and call ``release_conn()`` when done."""
        return self._get(key)

    def _get(self, key: str):
        try:
            return self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"object {key!r} not found") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            yield obj.object_name
