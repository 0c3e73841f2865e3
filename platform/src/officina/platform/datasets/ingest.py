"""From one uploaded file to what a dataset version holds: files, labels, schema, stats, preview."""
from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass, field
from typing import Any

from officina.platform.datasets.archive import ArchiveLimits, iter_archive, validate_relpath
from officina.platform.datasets.formats import (detect_format, infer_schema, is_image_path, label_image_files,
                                                load_tabular, load_text)
from officina.platform.datasets.stats import image_stats, preview_rows, tabular_stats, thumbnails
from officina.platform.errors import Invalid

KINDS = ("tabular", "images", "text")


@dataclass
class Ingested:
    """A parsed upload, ready to be stored as a version."""

    kind: str
    format: str
    files: dict[str, bytes]
    labels: dict[str, str | None] = field(default_factory=dict)
    schema: list[dict[str, Any]] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    preview: dict[str, Any] = field(default_factory=dict)
    row_count: int | None = None
    label_column: str | None = None
    text_column: str | None = None


def ingest(data: bytes, filename: str, *, kind: str | None = None, label: str | None = None,
           text: str | None = None, limits: ArchiveLimits | None = None) -> Ingested:
    """Parse an upload: a table (CSV/Parquet/JSONL), a text table, or an image archive.

    Raises:
        Invalid: empty, malformed or unsafe input, or options that do not fit it.
        TooLarge: an archive over the limits.
    """
    if not data:
        raise Invalid("the upload is empty", field="file")
    if kind is not None and kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}", field="kind")
    basename = validate_relpath(posixpath.basename(filename or "") or "upload", field_name="filename")
    fmt = detect_format(basename, data[:512])
    if fmt in ("zip", "tar"):
        if kind not in (None, "images"):
            raise Invalid(f"an archive upload makes an images dataset, not {kind}", field="kind")
        return _ingest_images(data, fmt, limits)
    if kind == "images":
        raise Invalid("an images dataset is uploaded as a zip or tar of class folders", field="file")
    if kind == "text" or (kind is None and text is not None):
        parsed = load_text(data, basename, text=text, label=label)
        frame, label_col, text_col = parsed.frame, parsed.label, parsed.text
        kind = "text"
    else:
        table = load_tabular(data, basename, label=label)
        frame, label_col, text_col = table.frame, table.label, None
        kind = "tabular"
    return Ingested(kind=kind, format=fmt, files={basename: data},
                    schema=[{"name": c.name, "dtype": c.dtype, "nullable": c.nullable} for c in infer_schema(frame)],
                    stats=tabular_stats(frame, label=label_col), preview=_table_preview(frame),
                    row_count=int(len(frame)), label_column=label_col, text_column=text_col)


def _ingest_images(data: bytes, fmt: str, limits: ArchiveLimits | None) -> Ingested:
    files = {entry.path: entry.read() for entry in iter_archive(data, limits)}
    images = [p for p in files if is_image_path(p)]
    labelled = label_image_files(files.keys(), files)
    labels = dict(labelled)
    kept = {path: files[path] for path in labels}
    stats = image_stats((path, labels[path], kept[path]) for path in sorted(kept))
    thumbs = thumbnails([(p, kept[p]) for p in sorted(images)], limit=32)
    preview = {"thumbnails": [{"path": t["path"], "label": labels.get(t["path"]),
                               "png_base64": base64.b64encode(t["png"]).decode()} for t in thumbs]}
    return Ingested(kind="images", format=fmt, files=kept, labels=labels, stats=stats, preview=preview,
                    row_count=len(kept), label_column="folder" if any(labels.values()) else None)


def _table_preview(frame) -> dict[str, Any]:
    """First rows as column names plus value lists (Postgres jsonb does not keep key order)."""
    columns = [str(c) for c in frame.columns]
    return {"columns": columns, "rows": [[row[c] for c in columns] for row in preview_rows(frame, 20)]}
