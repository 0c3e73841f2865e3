"""Benchmark: uploading ~1 GB of mixed files with ``sdk.datasets.upload`` against writing them
straight to S3 (targets: first upload at least 70 % of direct throughput; re-uploading the
unchanged folder in under 5 % of the first upload's time).

Run: .venv/bin/python bench/bench_upload.py [--files 2000] [--big 5] [--parallel 4]. Starts its own
embedded stack in a temp dir, as the tests' ``live_stack`` does, unless ``OFFICINA_URL`` is set: then
it uses that server with ``OFFICINA_TOKEN`` and, for the direct run, ``OFFICINA_S3_*``. Measures in
one run: (a) the ``minio`` client's ``put_object`` of every file to the same bucket (another
prefix), ``--parallel`` threads; (b) the SDK's first upload (hashing included); (c) the same upload
again with nothing changed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from officina import sdk


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_files(root: Path, files: int, big: int, seed: int = 0) -> int:
    """``files`` random files of 20 KB–1 MB (log-uniform) in 20 folders, plus ``big`` of 60–120 MB."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(files):
        size = int(np.exp(rng.uniform(np.log(20_000), np.log(1_000_000))))
        folder = root / f"shard{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05d}.bin").write_bytes(rng.bytes(size))
        total += size
    for i in range(big):
        size = int(rng.integers(60_000_000, 120_000_001))
        (root / f"big{i}.bin").write_bytes(rng.bytes(size))
        total += size
    return total


@contextlib.contextmanager
def platform() -> Iterator[tuple[str, str, object]]:
    """``(url, token, settings)`` of a running Officina: OFFICINA_URL's, or an embedded one started here."""
    from officina.platform.settings import Settings

    if os.environ.get("OFFICINA_URL"):
        yield os.environ["OFFICINA_URL"], os.environ.get("OFFICINA_TOKEN", ""), Settings()
        return
    from stack import embedded

    with embedded() as running:
        yield running.url, running.token, running.settings


def direct_put(settings, root: Path, paths: list[Path], parallel: int) -> float:
    """Seconds to put every file to S3 with the minio client, ``parallel`` at a time; deletes them after."""
    from minio.deleteobjects import DeleteObject

    from officina.platform.storage import ObjectStore

    store = ObjectStore.from_settings(settings)
    prefix = f"bench-direct/{uuid.uuid4().hex}/"

    def put(path: Path) -> None:
        with open(path, "rb") as fh:
            store.client.put_object(store.bucket, prefix + path.relative_to(root).as_posix(), fh,
                                    path.stat().st_size)

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(put, sorted(paths, key=lambda p: -p.stat().st_size)))
    seconds = time.perf_counter() - started
    print(f"    (direct: client CPU {time.process_time() - cpu:.2f} s)")
    doomed = [DeleteObject(o.object_name) for o in store.client.list_objects(store.bucket, prefix, recursive=True)]
    for error in store.client.remove_objects(store.bucket, doomed):
        print(f"could not delete {error.object_name}: {error}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="small files (20 KB–1 MB)")
    parser.add_argument("--big", type=int, default=5, help="big files (60–120 MB)")
    parser.add_argument("--parallel", type=int, default=4, help="threads, for both the direct and SDK runs")
    parser.add_argument("--team", default=None, help="team to upload to (default: your only team)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="officina-bench-") as tmp:
        root = Path(tmp) / "data"
        t0 = time.perf_counter()
        total = make_files(root, args.files, args.big)
        paths = [p for p in root.rglob("*") if p.is_file()]
        mb = total / 1e6
        print(f"generated {len(paths):,} files, {mb:,.1f} MB in {time.perf_counter() - t0:.1f} s "
              f"on {os.cpu_count()} CPUs")
        os.environ["OFFICINA_CACHE_DIR"] = str(Path(tmp) / "sdk-cache")  # a cold hash cache for (b)
        with platform() as (url, token, settings):
            sdk.connect(url, token)
            name = f"bench-{uuid.uuid4().hex[:8]}"
            direct = direct_put(settings, root, paths, args.parallel)
            print(f"(a) direct S3 put_object, {args.parallel} threads: {direct:6.2f} s  {mb / direct:7.1f} MB/s")

            first: dict = {}
            t0, cpu0 = time.perf_counter(), time.process_time()
            v1 = sdk.datasets.upload(name, root, team=args.team, kind="files", parallel=args.parallel, stats=first)
            upload, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in first["seconds"].items() if k != "total")
            print(f"(b) sdk upload, first:              {upload:6.2f} s  {mb / upload:7.1f} MB/s  ({steps}; "
                  f"{first['bytes_sent'] / 1e6:,.1f} MB sent; client CPU {cpu:.2f} s)")

            again: dict = {}
            t0 = time.perf_counter()
            v2 = sdk.datasets.upload(name, root, team=args.team, kind="files", parallel=args.parallel, stats=again)
            reupload = time.perf_counter() - t0
            steps = ", ".join(f"{k} {v:.2f} s" for k, v in again["seconds"].items() if k != "total")
            print(f"(c) sdk re-upload, unchanged:       {reupload:6.2f} s  ({steps}; {again['files_hashed']} files "
                  f"hashed, {again['bytes_sent']} bytes sent)")
            assert v1.number + 1 == v2.number and len(v2.files) == len(paths)
    ratio = (mb / upload) / (mb / direct)
    print(f"(b)/(a) throughput: {100 * ratio:.0f} % (target >= 70 %)")
    print(f"(c)/(b) time:       {100 * reupload / upload:.1f} % (target < 5 %)")


if __name__ == "__main__":
    main()
