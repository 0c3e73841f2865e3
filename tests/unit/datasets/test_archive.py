"""Safe archive reading: real digits archives pass; zip-slip, links, bombs, duplicates and floods are refused."""
from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile

import pytest

from officina.platform.datasets.archive import (ArchiveLimits, detect_archive, is_ignored, iter_archive,
                                                read_archive, validate_name, validate_relpath)
from officina.platform.errors import Invalid, TooLarge


def make_zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def file_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def test_digits_zip_reads_every_png(digits_zip, digits_files):
    files = read_archive(digits_zip)
    assert len(files) == 1797
    assert files == {p: data for p, (_l, data) in digits_files.items()}


def test_digits_tar_gz_streams_every_png(digits_files):
    members = [(file_info(p, len(d)), d) for p, (_l, d) in list(digits_files.items())[:200]]
    entries = list(iter_archive(make_tar(members)))
    assert [e.path for e in entries] == [p for p, _ in list(digits_files.items())[:200]]
    with entries[0].open() as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_clutter_is_skipped_quietly_and_dirs_ignored():
    data = make_zip({"__MACOSX/a/._x.png": b"x", "a/.DS_Store": b"x", ".hidden": b"x", "a/": b"", "a/b.png": b"png"})
    assert read_archive(data) == {"a/b.png": b"png"}


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/x", "C:/x", "a\\..\\x", "a/\x01b"])
def test_zip_slip_paths_are_refused(name):
    with pytest.raises(Invalid) as err:
        read_archive(make_zip({"ok.png": b"1", name: b"2"}))
    assert "path" in err.value.message and err.value.details["path"] == name


@pytest.mark.parametrize("name", ["../x", "/etc/x"])
def test_zip_slip_paths_are_refused_in_tar(name):
    with pytest.raises(Invalid):
        read_archive(make_tar([(file_info(name, 1), b"x")]))


def test_symlink_in_tar_is_refused():
    link = tarfile.TarInfo("a/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(Invalid, match="symlink"):
        read_archive(make_tar([(file_info("a/ok.png", 1), b"x"), (link, None)]))


def test_hardlink_and_device_in_tar_are_refused():
    hard = tarfile.TarInfo("a/hard.png")
    hard.type, hard.linkname = tarfile.LNKTYPE, "a/ok.png"
    with pytest.raises(Invalid, match="hardlink"):
        read_archive(make_tar([(file_info("a/ok.png", 1), b"x"), (hard, None)]))
    dev = tarfile.TarInfo("a/dev")
    dev.type = tarfile.CHRTYPE
    with pytest.raises(Invalid, match="device"):
        read_archive(make_tar([(dev, None)]))


def test_symlink_in_zip_is_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        info = zipfile.ZipInfo("a/link.png")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(Invalid, match="symlink"):
        read_archive(out.getvalue())


def test_duplicate_names_are_refused():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("a/x.png", b"1")
        zf.writestr("a/x.png", b"2")
    with pytest.raises(Invalid, match="more than once"):
        read_archive(out.getvalue())
    with pytest.raises(Invalid, match="more than once"):  # the same after normalisation
        read_archive(make_zip({"a/x.png": b"1", "a/./x.png": b"2"}))
    with pytest.raises(Invalid, match="more than once"):
        read_archive(make_tar([(file_info("a/x.png", 1), b"1"), (file_info("a//x.png", 1), b"2")]))


def test_highly_compressible_entry_is_refused_as_a_bomb():
    bomb = make_zip({"zeros.bin": b"\0" * (50 * 1024 * 1024)})
    assert len(bomb) < 100_000
    with pytest.raises(TooLarge, match="zip bomb"):
        read_archive(bomb)


def test_tar_gz_bomb_is_refused_before_decompressing_it():
    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        tf.addfile(file_info("zeros.bin", 64 * 1024 * 1024), Zeros(64 * 1024 * 1024))
    with pytest.raises(TooLarge):
        read_archive(out.getvalue())


def test_per_file_and_total_limits():
    data = make_zip({"a.bin": b"x" * 2000, "b.bin": b"y" * 2000}, zipfile.ZIP_STORED)
    with pytest.raises(TooLarge, match="per-file"):
        read_archive(data, ArchiveLimits(max_file_size=1000))
    with pytest.raises(TooLarge, match="limit of 3000"):
        read_archive(data, ArchiveLimits(max_total_size=3000))


def lying_zip(real: bytes, declared: int) -> bytes:
    """A zip whose headers (local and central) declare ``declared`` bytes for a much larger deflated entry."""
    data = bytearray(make_zip({"a/big.bin": real}))
    real_size = struct.pack("<I", len(real))
    fake = struct.pack("<I", declared)
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    assert data[local + 22:local + 26] == real_size and data[central + 24:central + 28] == real_size
    data[local + 22:local + 26] = fake
    data[central + 24:central + 28] = fake
    return bytes(data)


def test_entry_whose_header_lies_about_its_size_is_refused():
    bomb = lying_zip(b"\0" * (20 * 1024 * 1024), declared=100)
    entries = list(iter_archive(bomb))  # declared sizes pass the checks...
    assert entries[0].size == 100
    with pytest.raises((Invalid, TooLarge)):  # ...the bytes actually read do not
        entries[0].read()


def test_too_many_entries():
    data = make_zip({f"a/{i}.png": b"x" for i in range(101)}, zipfile.ZIP_STORED)
    with pytest.raises(TooLarge, match="more than 100 entries"):
        read_archive(data, ArchiveLimits(max_entries=100))


def test_empty_and_non_archive_uploads():
    with pytest.raises(Invalid, match="empty"):
        read_archive(b"")
    with pytest.raises(Invalid, match="not a zip or tar"):
        read_archive(b"just some text")
    with pytest.raises(Invalid):
        read_archive(b"PK\x03\x04" + b"\0" * 100)  # truncated zip


def test_detect_archive():
    assert detect_archive(make_zip({"a": b"1"})[:512]) == "zip"
    assert detect_archive(make_tar([(file_info("a", 1), b"1")])[:512]) == "tar"
    assert detect_archive(make_tar([(file_info("a", 1), b"1")], mode="w")[:512]) == "tar"
    assert detect_archive(b"a,b\n1,2\n") is None


@pytest.mark.parametrize("name", ["mnist", "wine-2024", "a", "b.c_d-e", "0" * 63])
def test_good_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a\\b", "Upper", "-lead", ".hidden", "0" * 64, "a b", "é"])
def test_bad_names(name):
    with pytest.raises(Invalid) as err:
        validate_name(name)
    assert err.value.details["field"] == "name"


def test_relpath_normalisation_and_refusals():
    assert validate_relpath("a/./b//c.png") == "a/b/c.png"
    for bad in ["", "/", "../a", "a/..", "/abs", "a\\b", "D:x", "x" * 2000]:
        with pytest.raises(Invalid):
            validate_relpath(bad)
    assert is_ignored("__MACOSX/x") and is_ignored("a/.DS_Store") and not is_ignored("a/b.png")
