"""Detect and parse dataset formats: tabular (CSV, Parquet), image classification archives, text (JSONL, CSV).

Parsers raise ``Invalid`` naming the problem (line, byte offset, column) so the user can fix the file.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from officina.platform.errors import Invalid

LABEL_NAMES = ("label", "target", "class", "y")
TEXT_NAMES = ("text", "sentence", "content", "document", "review", "body")
PATH_NAMES = ("path", "file", "filename", "image")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ColumnSchema:
    """One inferred column: a simple dtype (int, float, bool, string, datetime) and nullability."""

    name: str
    dtype: str
    nullable: bool


@dataclass(frozen=True)
class Tabular:
    """A parsed table with its inferred schema and label column (``None`` when unlabeled)."""

    frame: pd.DataFrame
    schema: list[ColumnSchema]
    label: str | None


@dataclass(frozen=True)
class TextData:
    """A parsed text dataset: the frame, its text column and optional label column."""

    frame: pd.DataFrame
    text: str
    label: str | None


def detect_format(filename: str, head: bytes) -> str:
    """Name an upload's format (``csv``, ``parquet``, ``jsonl``, ``zip``, ``tar``) from its name and first bytes."""
    lower = filename.lower()
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or (len(head) >= 262 and head[257:262] == b"ustar"):
        return "tar"
    for ext, fmt in ((".csv", "csv"), (".tsv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                     (".parquet", "parquet"), (".zip", "zip"), (".tar", "tar"), (".tar.gz", "tar"), (".tgz", "tar")):
        if lower.endswith(ext):
            return fmt
    raise Invalid(f"cannot tell the format of {filename!r}; expected CSV, Parquet, JSONL, zip or tar",
                  field="file", filename=filename)


def check_utf8(data: bytes, *, name: str = "file") -> None:
    """Raise ``Invalid`` naming the byte offset and line of the first byte that is not UTF-8."""
    view, pos, step = memoryview(data), 0, 1 << 24
    while pos < len(data):
        try:
            _, used = codecs.utf_8_decode(view[pos:pos + step], "strict", pos + step >= len(data))
        except UnicodeDecodeError as exc:
            offset = pos + exc.start
            line = data.count(b"\n", 0, offset) + 1
            raise Invalid(f"{name} is not UTF-8: byte 0x{data[offset]:02x} at offset {offset} (line {line})",
                          field="file", offset=offset, line=line) from None
        pos += used if used else step


def _ragged_line(text_bytes: bytes, delimiter: str) -> tuple[int, int, int] | None:
    """(line, expected fields, got fields) of the first ragged row, found with the stdlib csv module."""
    reader = csv.reader(io.StringIO(text_bytes.decode("utf-8-sig"), newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        for row in reader:
            if row and len(row) != len(header):
                return reader.line_num, len(header), len(row)
    except csv.Error as exc:
        raise Invalid(f"CSV is malformed at line {reader.line_num}: {exc} (a quote left open?)", field="file",
                      line=reader.line_num) from None
    return None


def read_csv(data: bytes, *, name: str = "CSV", delimiter: str = ",") -> pd.DataFrame:
    """Parse UTF-8 CSV bytes with a header row into a DataFrame (types inferred by pyarrow).

    Raises:
        Invalid: empty file, no rows, non-UTF-8 bytes, ragged or malformed rows, bad header.
    """
    if not data or not data.strip():
        raise Invalid(f"{name} is empty", field="file")
    check_utf8(data, name=name)
    buf = pa.py_buffer(data)
    if data.startswith(_UTF8_BOM):
        buf = buf.slice(len(_UTF8_BOM))
    try:
        table = pacsv.read_csv(pa.BufferReader(buf),
                               parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        found = _ragged_line(data, delimiter)
        if found:
            line, want, got = found
            raise Invalid(f"{name} line {line} has {got} fields, the header has {want}", field="file",
                          line=line, expected=want, got=got) from None
        raise Invalid(f"{name} is malformed: {exc}", field="file") from None
    if data.count(b'"') % 2:  # an odd quote count may be a quote left open to the end of the file
        _ragged_line(data, delimiter)
    _check_columns(table.column_names, name)
    if table.num_rows == 0:
        raise Invalid(f"{name} has a header but no rows", field="file")
    return _to_pandas(table)


_NULLABLE_TYPES = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                   pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                   pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow → pandas keeping ints and bools with nulls as nullable ints/bools, and dates as datetime64."""
    frame = table.to_pandas(date_as_object=False)
    for name, col in zip(table.column_names, table.columns):
        dtype = _NULLABLE_TYPES.get(col.type)
        if col.null_count and dtype is not None:
            frame[name] = pd.Series(pd.array(col.to_numpy(zero_copy_only=False), dtype=dtype), index=frame.index)
    return frame


def _check_columns(columns: Sequence[str], name: str) -> None:
    seen: set[str] = set()
    for i, col in enumerate(columns):
        if not str(col).strip():
            raise Invalid(f"{name} column {i + 1} has an empty name", field="file", column=i + 1)
        if col in seen:
            raise Invalid(f"{name} has the column {col!r} more than once", field="file", column=col)
        seen.add(col)


def read_parquet(data: bytes, *, name: str = "Parquet file") -> pd.DataFrame:
    """Parse Parquet bytes into a DataFrame; raise ``Invalid`` if it is empty or unreadable."""
    if not data:
        raise Invalid(f"{name} is empty", field="file")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise Invalid(f"{name} is not a readable Parquet file: {exc}", field="file") from None
    _check_columns(table.column_names, name)
    if table.num_rows == 0:
        raise Invalid(f"{name} has no rows", field="file")
    return _to_pandas(table)


def read_jsonl(data: bytes, *, name: str = "JSONL file") -> pd.DataFrame:
    """Parse JSON Lines (one object per line) into a DataFrame; raise ``Invalid`` naming a bad line."""
    if not data or not data.strip():
        raise Invalid(f"{name} is empty", field="file")
    check_utf8(data, name=name)
    records = []
    for number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise Invalid(f"{name} line {number} is not valid JSON: {exc.msg}", field="file", line=number) from None
        if not isinstance(obj, dict):
            raise Invalid(f"{name} line {number} is not a JSON object", field="file", line=number)
        records.append(obj)
    return pd.DataFrame.from_records(records)


def simple_dtype(series: pd.Series) -> str:
    """Map a pandas dtype to ``int``, ``float``, ``bool``, ``datetime`` or ``string``."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if dtype == object:
        kinds = {type(v) for v in series.dropna().head(1000)}
        if kinds and kinds <= {bool}:
            return "bool"
    return "string"


def infer_schema(frame: pd.DataFrame) -> list[ColumnSchema]:
    """Per column: simple dtype and whether any value is missing."""
    nulls = frame.isna().any()
    return [ColumnSchema(str(col), simple_dtype(frame[col]), bool(nulls[col])) for col in frame.columns]


def choose_column(columns: Sequence[str], requested: str | None, candidates: Iterable[str], *,
                  role: str = "label") -> str | None:
    """The user's column if it exists, else the first column named like a candidate (case-insensitive), else None.

    Raises:
        Invalid: the user named a column that does not exist (the message lists the available ones).
    """
    names = [str(c) for c in columns]
    if requested is not None:
        if requested not in names:
            raise Invalid(f"{role} column {requested!r} does not exist; available columns: {', '.join(names)}",
                          field=f"{role}_column", column=requested, available=names)
        return requested
    by_lower = {n.lower(): n for n in reversed(names)}
    for cand in candidates:
        if cand in by_lower:
            return by_lower[cand]
    return None


def load_tabular(data: bytes, filename: str, *, label: str | None = None) -> Tabular:
    """Parse a CSV or Parquet upload, infer its schema and pick its label column."""
    fmt = detect_format(filename, data[:512])
    if fmt == "csv":
        frame = read_csv(data, name=filename, delimiter="\t" if filename.lower().endswith(".tsv") else ",")
    elif fmt == "parquet":
        frame = read_parquet(data, name=filename)
    else:
        raise Invalid(f"{filename!r} is not a tabular file (CSV or Parquet)", field="file", format=fmt)
    return Tabular(frame, infer_schema(frame), choose_column(list(frame.columns), label, LABEL_NAMES))


def load_text(data: bytes, filename: str, *, text: str | None = None, label: str | None = None) -> TextData:
    """Parse a JSONL or CSV text upload; the text column is the user's, one named like text, or the only string one."""
    fmt = detect_format(filename, data[:512])
    if fmt == "jsonl":
        frame = read_jsonl(data, name=filename)
    elif fmt == "csv":
        frame = read_csv(data, name=filename)
    else:
        raise Invalid(f"{filename!r} is not a text dataset (JSONL or CSV)", field="file", format=fmt)
    columns = [str(c) for c in frame.columns]
    label_col = choose_column(columns, label, LABEL_NAMES)
    text_col = choose_column(columns, text, TEXT_NAMES, role="text")
    if text_col is None:
        strings = [c for c in columns if c != label_col and simple_dtype(frame[c]) == "string"]
        if len(strings) != 1:
            raise Invalid(f"cannot tell which column holds the text; name it (columns: {', '.join(columns)})",
                          field="text_column", available=columns)
        text_col = strings[0]
    return TextData(frame, text_col, label_col)


def load_frame(data: bytes, path: str, *, text: str | None = None, label: str | None = None) -> pd.DataFrame:
    """The table of a stored tabular (or, with ``text``, text) file, parsed as at upload."""
    name = path.rsplit("/", 1)[-1]
    if text is not None:
        return load_text(data, name, text=text, label=label).frame
    return load_tabular(data, name, label=label).frame


def is_image_path(path: str) -> bool:
    """True for paths ending in .png, .jpg or .jpeg (any case)."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def _strip_common_root(paths: list[str]) -> tuple[str, list[str]]:
    """Drop a single top folder shared by every path (as when a folder itself was zipped)."""
    tops = {p.split("/", 1)[0] for p in paths}
    if len(tops) == 1 and all("/" in p for p in paths):
        top = tops.pop()
        inner = [p.split("/", 1)[1] for p in paths]
        if any("/" in p for p in inner) or any(not is_image_path(p) for p in inner):
            return top + "/", inner
    return "", paths


def label_image_files(paths: Iterable[str], files: Mapping[str, bytes] | None = None) -> list[tuple[str, str | None]]:
    """Pair each image path with its label: ``class/file.png`` folders, or flat images plus a ``path,label`` CSV.

    ``files`` gives the bytes of the archive's CSV when the layout is flat. Returns ``[(path, label)]``
    sorted by path, with the paths as stored in the archive.

    Raises:
        Invalid: no images, unexpected files, mixed layouts, or a labels CSV that does not match.
    """
    all_paths = sorted(paths)
    if not all_paths:
        raise Invalid("the upload holds no files", field="file")
    root, rel = _strip_common_root(all_paths)
    images = [p for p in rel if is_image_path(p)]
    others = [p for p in rel if not is_image_path(p)]
    if not images:
        raise Invalid("the upload holds no .png/.jpg/.jpeg images", field="file")
    depths = {p.count("/") for p in images}
    if depths == {1} and not others:
        return [(root + p, p.split("/", 1)[0]) for p in images]
    if depths == {0}:
        csvs = [p for p in others if p.lower().endswith(".csv") and "/" not in p]
        if len(csvs) != 1 or len(others) != 1:
            raise Invalid("flat image uploads need exactly one labels CSV with path,label columns beside the "
                          f"images (found {', '.join(others) or 'none'})", field="file")
        if files is None or root + csvs[0] not in files:
            raise Invalid(f"labels file {csvs[0]!r} was not provided", field="file")
        return _labels_from_csv(root, images, files[root + csvs[0]], csvs[0])
    if depths != {1}:
        raise Invalid("images must be either in class folders (class/file.png) or all at the top level with a "
                      "labels CSV", field="file", depths=sorted(depths))
    raise Invalid(f"unexpected non-image files among the images: {', '.join(others[:5])}", field="file",
                  files=others[:20])


def _labels_from_csv(root: str, images: list[str], data: bytes, name: str) -> list[tuple[str, str | None]]:
    frame = read_csv(data, name=name)
    columns = [str(c) for c in frame.columns]
    path_col = choose_column(columns, None, PATH_NAMES, role="path")
    label_col = choose_column(columns, None, LABEL_NAMES)
    if path_col is None or label_col is None:
        raise Invalid(f"labels file {name!r} needs a path column and a label column; it has {', '.join(columns)}",
                      field="file", available=columns)
    labels: dict[str, str | None] = {}
    for path, label in zip(frame[path_col].astype(str), frame[label_col]):
        if path in labels:
            raise Invalid(f"labels file {name!r} lists {path!r} more than once", field="file", path=path)
        labels[path] = None if pd.isna(label) else str(label)
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing or extra:
        raise Invalid(f"labels file {name!r} does not match the images: "
                      f"{len(missing)} image(s) without a label (e.g. {missing[:3]}), "
                      f"{len(extra)} listed but absent (e.g. {extra[:3]})", field="file",
                      unlabeled=missing[:20], absent=extra[:20])
    return [(root + p, labels[p]) for p in images]
