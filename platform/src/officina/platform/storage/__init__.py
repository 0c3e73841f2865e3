"""Object storage: the one module that talks S3 (MinIO, SeaweedFS or any S3 server)."""
from officina.platform.storage.s3 import ObjectStore

__all__ = ["ObjectStore"]
