"""Dataset tasks on the ``io`` queue: run a build, collect garbage. Thin wrappers over the platform."""
from __future__ import annotations

from dataclasses import asdict

from officina.platform.datasets.builder import VersionBuilder
from officina.platform.datasets.gc import collect_garbage
from officina.platform.storage.blobs import BlobStore
from officina.platform.tasks import DATASET_BUILD, DATASET_GC
from officina.workers.app import app, services


@app.task(name=DATASET_BUILD)
def build(build_id: str) -> str:
    """Make the version of one queued build; return its final status."""
    svc = services()
    return VersionBuilder(svc.pool, BlobStore(svc.store)).run(build_id)


@app.task(name=DATASET_GC)
def gc() -> dict:
    """Delete unreferenced blobs and manifests past their grace period, and parts of abandoned uploads."""
    svc = services()
    return asdict(collect_garbage(svc.pool, svc.store))
