"""Uploads through builds: hash locally, declare, send only what the server lacks, commit, wait.

``sdk.datasets.upload`` calls :func:`send`. Files are hashed once (see :mod:`officina.sdk.cache`),
declared in batches, and only the ``missing`` ones are PUT, from a pool of threads with one HTTP
session each; files over the build's ``part_size`` go in parts. The open build is remembered in the
cache so that running the same upload again after an interruption sends only what is still missing.
"""
from __future__ import annotations

import io
import math
import os
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from officina.sdk.cache import CHUNK, Cache, FileHash
from officina.sdk.client import Client
from officina.sdk.errors import ConnectionFailed, Conflict, InvalidRequest, NotFound, OfficinaError, ServerError, \
    error_for

DECLARE_BATCH = 10_000
BATCH_FILE_MAX = 2 * 1024 * 1024   # files up to this size travel in batches ...
BATCH_BYTES = 16 * 1024 * 1024     # ... of at most this many bytes
BATCH_FILES = 500
RETRIES = 3
_STATUS_OF_CODE = {"invalid": 400, "unauthenticated": 401, "forbidden": 403, "not_found": 404, "conflict": 409,
                   "too_large": 413}
FINISHED = ("done", "failed", "aborted")


class ThreadClients:
    """One :class:`Client` (so one HTTP session) per thread, all cloned from one connection."""

    def __init__(self, client: Client):
        self.client = client
        self._local = threading.local()
        self._made: list[Client] = []
        self._lock = threading.Lock()

    def get(self) -> Client:
        made = getattr(self._local, "client", None)
        if made is None:
            base = self.client
            made = Client(base.url, base.token if base.token is not None else "", timeout=base.timeout)
            self._local.client = made
            with self._lock:
                self._made.append(made)
        return made

    def close(self) -> None:
        with self._lock:
            for made in self._made:
                made.session.close()
            self._made.clear()


def build_path(build_id: str) -> str:
    return f"/builds/{quote(str(build_id), safe='')}"


def build_error(build: dict[str, Any]) -> OfficinaError:
    """The typed SDK error for a failed (or aborted) build, carrying the server's message."""
    if build.get("status") == "aborted":
        return Conflict(f"build {build['id']} was aborted", code="conflict", details={"build": build["id"]})
    error = build.get("error") or {}
    code = error.get("code") or "internal"
    body = {"error": {"code": code, "message": error.get("message") or f"build {build['id']} failed",
                      "details": {**(error.get("details") or {}), "build": build["id"]}}}
    exc = error_for(_STATUS_OF_CODE.get(code, 500), body)
    exc.build = build  # type: ignore[attr-defined]
    return exc


def wait(client: Client, build_id: str, *, progress: Progress | None = None,
         timeout: float | None = None) -> dict[str, Any]:
    """Poll a build until it is done; return it.

    Raises:
        OfficinaError: the build failed (the class matches the server's error code) or was aborted.
        TimeoutError: ``timeout`` seconds passed first.
    """
    delay, started = 0.05, time.monotonic()
    while True:
        build = client.get(build_path(build_id))["build"]
        if progress:
            progress.build(build)
        if build["status"] == "done":
            return build
        if build["status"] in FINISHED:
            raise build_error(build)
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"build {build_id} still {build['status']} after {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


# -- local files ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalFile:
    path: str  # relative posix path, as the version will hold it
    abspath: str
    stat: os.stat_result


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def walk(path: str | os.PathLike) -> list[LocalFile]:
    """The files to upload under ``path`` (or ``path`` itself), skipping hidden ones and __MACOSX.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InvalidRequest: there is nothing to upload there.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    root = root.resolve()
    if root.is_file():
        return [LocalFile(root.name, str(root), root.stat())]
    found: list[LocalFile] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(names):
            if _hidden(name):
                continue
            full = os.path.join(folder, name)
            if not os.path.isfile(full):
                continue
            rel = Path(full).relative_to(root).as_posix()
            found.append(LocalFile(rel, full, os.stat(full)))
    if not found:
        raise InvalidRequest(f"{path}: no files to upload (hidden files and __MACOSX are skipped)")
    return found


class _Body:
    """A request body streamed from ``length`` bytes of a file at ``offset``, in 1 MiB chunks."""

    def __init__(self, path: str, offset: int, length: int, on_bytes: Callable[[int], None]):
        self.path, self.offset, self.length, self.on_bytes = path, offset, length, on_bytes
        self.sent = 0

    def __len__(self) -> int:  # lets requests send a Content-Length instead of chunks
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            left = self.length
            while left:
                block = fh.read(min(CHUNK, left))
                if not block:
                    raise InvalidRequest(f"{self.path} became shorter while it was being uploaded")
                left -= len(block)
                self.sent += len(block)
                self.on_bytes(len(block))
                yield block


@dataclass(frozen=True)
class _Put:
    path: str
    abspath: str
    sha256: str
    offset: int
    length: int
    part: int | None = None
    parts: int | None = None


# -- progress -------------------------------------------------------------------------------------

class Progress:
    """A one-line progress display on stderr: bytes hashed and sent, then the build's phase."""

    def __init__(self, label: str, *, enabled: bool = True, stream=None):
        self.label, self.enabled = label, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self.phase, self.done, self.total, self.unit = "", 0, 0, "bytes"
        self._started = self._drawn = 0.0
        self._width = 0

    def start(self, phase: str, total: int, unit: str = "bytes", done: int = 0) -> None:
        """Begin a phase; the previous one's final state stays on its own line."""
        if not self.enabled:
            return
        with self._lock:
            now = time.monotonic()
            if self.phase:
                self._write(self._line(now), newline=True)
            self.phase, self.done, self.total, self.unit = phase, done, total, unit
            self._started = self._drawn = now
            if self.tty:
                self._write(self._line(now), newline=False)

    def advance(self, amount: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done += amount
        self._draw()

    def build(self, build: dict[str, Any]) -> None:
        """Show a build's phase and progress (from ``GET /builds/<id>``)."""
        if not self.enabled:
            return
        info = build.get("progress") or {}
        phase = info.get("phase") or build.get("status", "")
        done, total = int(info.get("done") or 0), int(info.get("total") or 0)
        if phase != self.phase:
            self.start(phase, total, info.get("unit") or "files", done)
            return
        with self._lock:
            self.done, self.total = done, total
        self._draw()

    def finish(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:
            if self.phase:
                self._write(self._line(time.monotonic()), newline=True)
                self.phase = ""
            self._write(text, newline=True)

    def _draw(self) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._drawn < 0.1:
                return
            self._drawn = now
            self._write(self._line(now), newline=False)

    def _line(self, now: float) -> str:
        total, done = self.total, self.done
        if total:
            filled = int(24 * min(done, total) / total)
            bar = f"[{'#' * filled}{'-' * (24 - filled)}] {100 * min(done, total) // total:3d}%"
        else:
            bar = ""
        elapsed = now - self._started
        if self.unit == "bytes":
            amount = f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB  {done / max(elapsed, 1e-6) / 1e6:,.1f} MB/s"
        else:
            amount = f"{done:,}/{total:,} {self.unit}" if total else ""
        return " ".join(part for part in (self.label, f"{self.phase:<10}", bar, amount, f"{elapsed:.1f} s") if part)

    def _write(self, line: str, *, newline: bool) -> None:
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad + ("\n" if newline else ""))
            self._width = 0 if newline else len(line)
        elif newline:
            self.stream.write(line + "\n")
        self.stream.flush()


# -- the upload -----------------------------------------------------------------------------------

def _with_retries(call: Callable[[], Any]) -> Any:
    """Run ``call``, again after a short pause when the server could not be reached or failed (5xx)."""
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except (ConnectionFailed, ServerError):
            if attempt == RETRIES:
                raise
            time.sleep(0.5 * 2 ** attempt)


class _Upload:
    """One run of :func:`send` (kept as an object so the steps stay small)."""

    def __init__(self, client: Client, base_path: str, files: list[LocalFile], params: dict[str, Any],
                 key: str, cache: Cache, progress: Progress, parallel: int):
        self.client, self.base_path, self.files, self.params = client, base_path, files, params
        self.key, self.cache, self.progress = key, cache, progress
        self.parallel = max(1, int(parallel))
        self.hashes: dict[str, FileHash] = {}
        self.part_size = 0
        self.bytes_sent = 0
        self.requests_sent = 0
        self.resumed = False

    def open_build(self, resume: bool) -> tuple[dict[str, Any], dict[str, str], dict[str, set[int]]]:
        """The build to send to: the open one left by an interrupted run of the same upload, or a new one."""
        saved = self.cache.open_build(self.key) if resume else None
        if saved:
            build_id, params = saved
            try:
                body = self.client.get(build_path(build_id), params={"files": 1})
            except (NotFound, InvalidRequest):
                body = None
            if body and body["build"]["status"] == "open":
                if params == self.params:
                    self.resumed = True
                    return body["build"], *_received(body)
                self.abort(build_id)
            self.cache.forget_build(self.key)
        self.resumed = False
        build = self.client.post(f"{self.base_path}/uploads", self.params)["build"]
        self.cache.remember_build(self.key, build["id"], self.params)
        return build, {}, {}

    def abort(self, build_id: str) -> None:
        try:
            self.client.delete(build_path(build_id))
        except OfficinaError:
            pass  # already gone, committed or finished: nothing to abort
        self.cache.forget_build(self.key)

    def hash(self, part_size: int) -> None:
        if part_size == self.part_size and self.hashes:
            return
        self.part_size = part_size
        self.progress.start("hashing", sum(f.stat.st_size for f in self.files))
        by_abs = self.cache.hash_files([(f.abspath, f.stat) for f in self.files], part_size,
                                       parallel=self.parallel, on_hashed=self.progress.advance)
        self.hashes = {f.path: by_abs[f.abspath] for f in self.files}

    def declare(self, build_id: str) -> list[str]:
        """Declare every file; return the paths whose bytes the server still needs."""
        missing: list[str] = []
        entries = [{"path": f.path, "sha256": self.hashes[f.path].sha256, "size": self.hashes[f.path].size}
                   for f in self.files]
        for start in range(0, len(entries), DECLARE_BATCH):
            answer = self.client.post(f"{build_path(build_id)}/files",
                                      {"files": entries[start:start + DECLARE_BATCH]})
            missing.extend(answer.get("missing") or [])
        return missing

    def plan(self, missing: list[str], parts_received: dict[str, set[int]]) -> list[_Put]:
        """The PUT requests still to make, largest first (parts of big files run in parallel)."""
        by_path = {f.path: f for f in self.files}
        puts: list[_Put] = []
        for path in missing:
            local = by_path.get(path)
            if local is None:
                raise InvalidRequest(f"the server asks for {path!r}, which this upload did not declare")
            digest = self.hashes[path]
            if digest.size <= self.part_size or not digest.parts:
                puts.append(_Put(path, local.abspath, digest.sha256, 0, digest.size))
                continue
            count = math.ceil(digest.size / self.part_size)
            have = parts_received.get(path, set())
            for number in range(1, count + 1):
                if number in have:
                    continue
                offset = (number - 1) * self.part_size
                puts.append(_Put(path, local.abspath, digest.parts[number - 1], offset,
                                 min(self.part_size, digest.size - offset), number, count))
        return sorted(puts, key=lambda put: -put.length)

    @staticmethod
    def batches(puts: list[_Put]) -> list[_Put | list[_Put]]:
        """Whole small files grouped into batches (one request each); parts and larger files alone."""
        single: list[_Put | list[_Put]] = []
        batch: list[_Put] = []
        size = 0
        for put in puts:
            if put.part is not None or put.length > BATCH_FILE_MAX:
                single.append(put)
                continue
            if batch and (size + put.length > BATCH_BYTES or len(batch) >= BATCH_FILES):
                single.append(batch)
                batch, size = [], 0
            batch.append(put)
            size += put.length
        if batch:
            single.append(batch)
        return single

    def put_all(self, build_id: str, puts: list[_Put]) -> None:
        self.progress.start("sending", sum(p.length for p in puts))
        if not puts:
            return
        clients = ThreadClients(self.client)
        lock = threading.Lock()

        def put_batch(batch: list[_Put]) -> None:
            total = sum(p.length for p in batch)

            def attempt() -> Any:
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for put in batch:
                        data = Path(put.abspath).read_bytes()
                        if len(data) != put.length:
                            raise InvalidRequest(f"{put.abspath} changed while it was being uploaded")
                        info = tarfile.TarInfo(put.path)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                result = clients.get().request("POST", f"{build_path(build_id)}/batch", data=buf.getvalue(),
                                               headers={"Content-Type": "application/x-tar"},
                                               timeout=max(clients.client.timeout, 300))
                self.progress.advance(total)
                return result

            _with_retries(attempt)
            with lock:
                self.bytes_sent += total
                self.requests_sent += len(batch)  # counts files and parts sent, batched or not

        def put_one(put: _Put | list[_Put]) -> None:
            if isinstance(put, list):
                put_batch(put)
                return
            url = f"{build_path(build_id)}/files/{quote(put.path)}"
            params = {"part": put.part, "parts": put.parts} if put.part else None
            headers = {"Content-Type": "application/octet-stream", "X-Content-SHA256": put.sha256}

            def attempt() -> Any:
                body = _Body(put.abspath, put.offset, put.length, self.progress.advance) if put.length else b""
                try:
                    return clients.get().request("PUT", url, params=params, data=body, headers=dict(headers),
                                                 timeout=max(clients.client.timeout, 300))
                except BaseException:
                    if put.length:
                        self.progress.advance(-body.sent)
                    raise

            _with_retries(attempt)
            with lock:
                self.bytes_sent += put.length
                self.requests_sent += 1

        try:
            work = self.batches(puts)
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(work))) as pool:
                futures = [pool.submit(put_one, put) for put in work]
                done, pending = wait_futures(futures, return_when=FIRST_EXCEPTION)
                for future in pending:
                    future.cancel()
                for future in done:
                    future.result()  # raises the first failure
        finally:
            clients.close()

    def commit(self, build_id: str) -> dict[str, Any]:
        return self.client.post(f"{build_path(build_id)}/commit")["build"]


def _received(body: dict[str, Any]) -> tuple[dict[str, str], dict[str, set[int]]]:
    """From ``GET /builds/<id>?files=1``: declared ``path → sha256`` and staged ``path → {part numbers}``."""
    build = body.get("build") or {}
    files = body.get("files", build.get("files")) or []
    parts = body.get("parts", build.get("parts")) or {}
    declared = {f["path"]: f.get("sha256") for f in files}
    return declared, {path: {int(n) for n in numbers} for path, numbers in parts.items()}


class _Stale(InvalidRequest):
    def __init__(self) -> None:
        super().__init__("the files changed since the interrupted upload")


def resume_key(client: Client, team: str, name: str, path: str | os.PathLike | None) -> str:
    where = str(Path(path).expanduser().resolve()) if path is not None else ""
    return "\x1f".join([client.url, team, name, where])


def send(client: Client, team: str, name: str, base_path: str, path: str | os.PathLike | None, *,
         params: dict[str, Any], progress: bool = False, parallel: int = 4, resume: bool = True,
         cache: Cache | None = None, stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """Upload ``path`` (a file or a folder) as a new version through a build; return the done build.

    ``stats``, when given, is filled with what this run did: ``files_hashed``, ``bytes_sent``,
    ``put_requests`` (files and parts sent; small files travel several to a request), ``resumed``, the
    done ``build``, and ``seconds`` spent per step.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OfficinaError: the server refused a step, or the build failed (with the server's message).
    """
    files = walk(path) if path is not None else []
    if not files and not params.get("remove"):
        raise InvalidRequest("nothing to upload: give a path (or remove= files from a base version)")
    cache = cache or Cache()
    bar = Progress(f"{name}:", enabled=progress)
    upload = _Upload(client, base_path, files, params, resume_key(client, team, name, path), cache, bar,
                     parallel)
    hashed_before = cache.hashed_files
    clock = {"start": time.perf_counter()}
    build, declared, parts = upload.open_build(resume)
    resumed = upload.resumed
    for attempt in (1, 2):
        try:
            upload.hash(int(build.get("part_size") or 0) or 1 << 62)
            clock["hashed"] = time.perf_counter()
            local = {f.path: upload.hashes[f.path].sha256 for f in files}
            if any(local.get(path) != sha for path, sha in declared.items()):
                raise _Stale()  # files changed or went away since the interrupted run: start over
            missing = upload.declare(build["id"]) if files else []
            clock["declared"] = time.perf_counter()
            upload.put_all(build["id"], upload.plan(missing, parts))
            build = upload.commit(build["id"])
            clock["sent"] = time.perf_counter()
            break
        except InvalidRequest:
            if attempt == 2 or not resumed:
                raise
            upload.abort(build["id"])  # a resumed build that no longer fits: make a fresh one
            build, declared, parts = upload.open_build(False)
            resumed = False
    try:
        done = wait(client, build["id"], progress=bar)
    finally:
        cache.forget_build(upload.key)
    clock["done"] = time.perf_counter()
    bar.finish(f"{name}: version {done.get('version')} ({upload.bytes_sent / 1e6:,.1f} MB sent)")
    if stats is not None:
        stats.update(files_hashed=cache.hashed_files - hashed_before, bytes_sent=upload.bytes_sent,
                     put_requests=upload.requests_sent, resumed=resumed, build=done,
                     seconds={"hash": clock["hashed"] - clock["start"], "declare": clock["declared"] - clock["hashed"],
                              "send": clock["sent"] - clock["declared"], "build": clock["done"] - clock["sent"],
                              "total": clock["done"] - clock["start"]})
    return done
