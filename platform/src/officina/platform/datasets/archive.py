"""Safe reading of uploaded zip and tar(.gz) archives, entirely in memory, never extracted to disk.

Every entry is checked before any is yielded: paths (no ``..``, absolute paths, backslashes or
drive letters), entry kinds (regular files only: no symlinks, hardlinks or devices), duplicate
names, entry count, and declared sizes. While an entry is read its actual bytes are counted too,
since headers can lie. ``__MACOSX/`` and dotfiles (``.DS_Store``) are skipped quietly.
"""
from __future__ import annotations

import io
import re
import stat
import tarfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, TypeVar

from officina.platform.errors import Invalid, TooLarge

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
_T = TypeVar("_T")
MAX_PATH_LENGTH = 1024
MAX_COMPONENT_LENGTH = 255


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied to one uploaded archive."""

    max_entries: int = 100_000
    max_file_size: int = 512 * 1024 * 1024
    max_total_size: int = 8 * 1024 * 1024 * 1024
    max_ratio: float = 200.0


def validate_name(name: str) -> str:
    """Return a dataset name if it is valid, else raise ``Invalid`` saying why."""
    if not isinstance(name, str) or not name:
        raise Invalid("dataset name must not be empty", field="name")
    if any(c in name for c in "/\\") or name in (".", "..") or "\x00" in name:
        raise Invalid(f"dataset name {name!r} must not contain path characters", field="name", name=name)
    if not NAME_RE.fullmatch(name):
        raise Invalid(f"dataset name {name!r} must be 1-63 characters of a-z, 0-9, '_', '.', '-' "
                      "starting with a letter or digit", field="name", name=name)
    return name


def validate_relpath(path: str, *, field_name: str = "path") -> str:
    """Return a safe relative path normalised (NFC, no ``.`` or empty parts), else raise ``Invalid``."""
    if not isinstance(path, str) or not path:
        raise Invalid("path must not be empty", field=field_name)
    bad = None
    if "\\" in path:
        bad = "contains a backslash"
    elif path.startswith("/"):
        bad = "is absolute"
    elif _DRIVE_RE.match(path):
        bad = "starts with a drive letter"
    elif any(ord(c) < 32 or ord(c) == 127 for c in path):
        bad = "contains a control character"
    elif len(path) > MAX_PATH_LENGTH:
        bad = f"is longer than {MAX_PATH_LENGTH} characters"
    if bad is None:
        parts = [p for p in unicodedata.normalize("NFC", path).split("/") if p not in ("", ".")]
        if ".." in parts:
            bad = "contains '..'"
        elif not parts:
            bad = "names no file"
        elif any(len(p) > MAX_COMPONENT_LENGTH for p in parts):
            bad = f"has a part longer than {MAX_COMPONENT_LENGTH} characters"
    if bad is not None:
        raise Invalid(f"path {path!r} {bad}", field=field_name, path=path)
    return "/".join(parts)


def is_ignored(path: str) -> bool:
    """True for macOS/OS clutter skipped quietly: ``__MACOSX/`` and any dotfile or dot-folder."""
    return any(p == "__MACOSX" or p.startswith(".") for p in path.split("/"))


class _Budget:
    """Counts actual bytes read across one archive against the limits."""

    def __init__(self, limits: ArchiveLimits, archive_size: int):
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.total = 0

    def add(self, path: str, entry_read: int, n: int) -> None:
        self.total += n
        lim = self.limits
        if entry_read > lim.max_file_size:
            raise TooLarge(f"archive entry {path!r} expands past the per-file limit of {lim.max_file_size} bytes",
                           path=path, limit=lim.max_file_size)
        if self.total > lim.max_total_size:
            raise TooLarge(f"archive expands past the limit of {lim.max_total_size} bytes", path=path,
                           limit=lim.max_total_size)
        if self.total > 1024 * 1024 and self.total / self.archive_size > lim.max_ratio:
            raise TooLarge(f"archive expands more than {lim.max_ratio:g}x its compressed size (zip bomb?)",
                           path=path, limit=lim.max_ratio)


class _CountingReader(io.RawIOBase):
    """A read-only stream that counts bytes against the budget and the entry's declared size."""

    def __init__(self, raw: BinaryIO, path: str, declared: int, budget: _Budget):
        self._raw, self._path, self._declared, self._budget = raw, path, declared, budget
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = _guard(self._path, lambda: self._raw.read(len(b)))
        n = len(data)
        b[:n] = data
        self.count += n
        if self.count > self._declared:
            raise Invalid(f"archive entry {self._path!r} holds more bytes than its header declares",
                          path=self._path, declared=self._declared)
        self._budget.add(self._path, self.count, n)
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _guard(path: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise Invalid(f"archive entry {path!r} is corrupt: {exc}", path=path) from exc


@dataclass
class ArchiveEntry:
    """One regular file in an archive; ``open()`` streams it, ``read()`` returns all its bytes."""

    path: str
    size: int
    _opener: Callable[[], BinaryIO] = field(repr=False)
    _budget: _Budget = field(repr=False)

    def open(self) -> BinaryIO:
        """A stream over the entry's bytes that enforces the size limits as it is read."""
        raw = _guard(self.path, self._opener)
        return io.BufferedReader(_CountingReader(raw, self.path, self.size, self._budget),
                                 buffer_size=_CHUNK)  # type: ignore[return-value]

    def read(self) -> bytes:
        """All the entry's bytes, read in chunks under the limits."""
        out = bytearray()
        with self.open() as fh:
            while chunk := fh.read(_CHUNK):
                out += chunk
        if len(out) != self.size:
            raise Invalid(f"archive entry {self.path!r} holds {len(out)} bytes, its header says {self.size}",
                          path=self.path)
        return bytes(out)


def detect_archive(head: bytes) -> str | None:
    """``"zip"``, ``"tar"`` (plain or gzip/bz2/xz) or ``None`` from an upload's first bytes."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _as_stream(source: bytes | BinaryIO) -> tuple[BinaryIO, int]:
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(bytes(source))
    if not source.seekable():
        raise Invalid("archive must be read from a seekable file")
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    return source, size


class _Checker:
    """Validates entry headers one by one, before any data is read."""

    def __init__(self, limits: ArchiveLimits, archive_size: int):
        self.limits, self.archive_size = limits, max(archive_size, 1)
        self.count = self.declared_total = 0
        self.seen: set[str] = set()

    def check(self, raw_name: str, size: int, kind: str, compressed: int | None = None) -> str | None:
        """Return the normalised path of a regular file to keep, ``None`` to skip; raise on bad entries."""
        lim = self.limits
        self.count += 1
        if self.count > lim.max_entries:
            raise TooLarge(f"archive has more than {lim.max_entries} entries", limit=lim.max_entries)
        path = validate_relpath(raw_name.rstrip("/") if kind == "dir" else raw_name, field_name="archive entry")
        if kind in ("symlink", "hardlink", "device"):
            raise Invalid(f"archive entry {raw_name!r} is a {kind}; only regular files are allowed",
                          path=raw_name, kind=kind)
        if kind == "dir" or is_ignored(path):
            return None
        if size > lim.max_file_size:
            raise TooLarge(f"archive entry {path!r} is {size} bytes, over the per-file limit of "
                           f"{lim.max_file_size}", path=path, size=size, limit=lim.max_file_size)
        if compressed is not None and size > 1024 * 1024 and size / max(compressed, 1) > lim.max_ratio:
            raise TooLarge(f"archive entry {path!r} expands more than {lim.max_ratio:g}x (zip bomb?)",
                           path=path, limit=lim.max_ratio)
        self.declared_total += size
        if self.declared_total > lim.max_total_size:
            raise TooLarge(f"archive expands past the limit of {lim.max_total_size} bytes",
                           limit=lim.max_total_size)
        if self.declared_total > 1024 * 1024 and self.declared_total / self.archive_size > lim.max_ratio:
            raise TooLarge(f"archive expands more than {lim.max_ratio:g}x its compressed size (zip bomb?)",
                           limit=lim.max_ratio)
        key = path.casefold()
        if key in self.seen:
            raise Invalid(f"archive has the file {path!r} more than once", path=path)
        self.seen.add(key)
        return path


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        return "symlink"
    if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return "device"
    return "dir" if info.is_dir() else "file"


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    return "device"


def _iter_zip(stream: BinaryIO, size: int, limits: ArchiveLimits) -> Iterator[ArchiveEntry]:
    try:
        zf = zipfile.ZipFile(stream)
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise Invalid(f"not a readable zip archive: {exc}") from exc
    checker, budget = _Checker(limits, size), _Budget(limits, size)
    keep: list[tuple[str, zipfile.ZipInfo]] = []
    for info in infos:
        path = checker.check(info.filename, info.file_size, _zip_kind(info), info.compress_size)
        if path is not None:
            if info.flag_bits & 0x1:
                raise Invalid(f"archive entry {path!r} is encrypted", path=path)
            keep.append((path, info))
    for path, info in keep:
        yield ArchiveEntry(path, info.file_size, lambda info=info: zf.open(info), budget)


def _iter_tar(stream: BinaryIO, size: int, limits: ArchiveLimits) -> Iterator[ArchiveEntry]:
    checker = _Checker(limits, size)
    keep: list[tuple[str, tarfile.TarInfo]] = []
    try:
        tf = tarfile.open(fileobj=stream, mode="r:*")
        for member in tf:  # lazy: each header is checked before the next entry's data is skipped
            path = checker.check(member.name, member.size, _tar_kind(member))
            if path is not None:
                keep.append((path, member))
    except tarfile.TarError as exc:
        raise Invalid(f"not a readable tar archive: {exc}") from exc
    except (EOFError, OSError, ValueError) as exc:
        raise Invalid(f"tar archive is corrupt: {exc}") from exc
    budget = _Budget(limits, size)

    def opener(member: tarfile.TarInfo) -> BinaryIO:
        fh = tf.extractfile(member)
        assert fh is not None  # regular files always have data
        return fh  # type: ignore[return-value]

    for path, member in keep:
        yield ArchiveEntry(path, member.size, lambda m=member: opener(m), budget)


def iter_archive(source: bytes | BinaryIO, limits: ArchiveLimits | None = None) -> Iterator[ArchiveEntry]:
    """Yield the regular files of a zip or tar(.gz) upload after checking every header.

    Raises:
        Invalid: unsafe paths, links or devices, duplicates, corrupt or unknown archives.
        TooLarge: too many entries, or entries over the per-file, total or ratio limits.
    """
    limits = limits or ArchiveLimits()
    stream, size = _as_stream(source)
    if size == 0:
        raise Invalid("upload is empty")
    kind = detect_archive(stream.read(512))
    stream.seek(0)
    if kind == "zip":
        yield from _iter_zip(stream, size, limits)
    elif kind == "tar":
        yield from _iter_tar(stream, size, limits)
    else:
        raise Invalid("upload is not a zip or tar archive")


def read_archive(source: bytes | BinaryIO, limits: ArchiveLimits | None = None) -> dict[str, bytes]:
    """Read every regular file of an archive into memory as ``{path: bytes}`` under the limits."""
    return {entry.path: entry.read() for entry in iter_archive(source, limits)}
