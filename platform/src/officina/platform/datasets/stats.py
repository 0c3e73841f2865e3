"""Statistics and previews of a dataset version, all JSON-safe (NaN → None, numpy scalars → Python)."""
from __future__ import annotations

import datetime as dt
import io
import math
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from officina.platform.datasets.formats import simple_dtype
from officina.platform.errors import Invalid, TooLarge

HISTOGRAM_BINS = 20
TOP_VALUES = 10
THUMBNAIL_PX = 64


def json_safe(value: Any) -> Any:
    """Convert numpy/pandas scalars and containers to JSON-safe Python values (NaN/NaT/inf → None)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is pd.NaT or (not isinstance(value, np.ndarray) and _is_na(value)):
        return None
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    return str(value)


def _is_na(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _numeric_stats(values: pd.Series, bins: int) -> dict[str, Any]:
    arr = values.to_numpy(dtype="float64", na_value=np.nan)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"min": None, "max": None, "mean": None, "std": None, "histogram": None}
    lo, hi = float(arr.min()), float(arr.max())
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    return {"min": lo, "max": hi, "mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "histogram": {"edges": json_safe(edges), "counts": json_safe(counts)}}


def _top_values(values: pd.Series, top: int) -> tuple[int, list[dict[str, Any]]]:
    counts = values.value_counts(dropna=True, sort=True)
    return int(len(counts)), [{"value": json_safe(k), "count": int(c)} for k, c in counts.head(top).items()]


def column_stats(series: pd.Series, *, bins: int = HISTOGRAM_BINS, top: int = TOP_VALUES) -> dict[str, Any]:
    """Type, missing count and, by type, min/max/mean/std/histogram or distinct count and top values."""
    kind = simple_dtype(series)
    out: dict[str, Any] = {"name": str(series.name), "type": kind, "missing": int(series.isna().sum())}
    if kind in ("int", "float"):
        out.update(_numeric_stats(series, bins))
        if kind == "int":
            out["distinct"], out["top"] = _top_values(series, top) if len(series) else (0, [])
    elif kind == "bool":
        out["distinct"], out["top"] = _top_values(series.astype("boolean"), top)
    elif kind == "datetime":
        present = series.dropna()
        out["min"] = json_safe(present.min()) if len(present) else None
        out["max"] = json_safe(present.max()) if len(present) else None
    else:
        out["distinct"], out["top"] = _top_values(series, top)
        lengths = series.dropna().astype(str).str.len()
        out["length"] = {"min": json_safe(lengths.min()), "max": json_safe(lengths.max()),
                         "mean": json_safe(lengths.mean())} if len(lengths) else None
    return out


def label_distribution(labels: Iterable[Any]) -> dict[str, int]:
    """Count of each label (as a string), most frequent first; missing labels are skipped."""
    series = labels if isinstance(labels, pd.Series) else pd.Series(list(labels), dtype=object)
    counts = series.dropna().astype(str).value_counts(sort=True)
    return {str(k): int(v) for k, v in counts.items()}


def tabular_stats(frame: pd.DataFrame, *, label: str | None = None, bins: int = HISTOGRAM_BINS,
                  top: int = TOP_VALUES) -> dict[str, Any]:
    """Row and column counts, per-column statistics and the label distribution of a table."""
    if label is not None and label not in frame.columns:
        raise Invalid(f"label column {label!r} does not exist; available columns: "
                      f"{', '.join(map(str, frame.columns))}", field="label_column", column=label)
    return {"kind": "tabular", "rows": int(len(frame)), "columns": int(frame.shape[1]),
            "column_stats": [column_stats(frame[c], bins=bins, top=top) for c in frame.columns],
            "label": label, "label_distribution": label_distribution(frame[label]) if label is not None else None}


def open_image(data: bytes, *, path: str = "image") -> Image.Image:
    """Open image bytes with Pillow, raising ``Invalid`` if unreadable and ``TooLarge`` for decompression bombs."""
    try:
        img = Image.open(io.BytesIO(data))
        img.size  # noqa: B018 - header parsed
        return img
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"image {path!r} has too many pixels: {exc}", path=path) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise Invalid(f"{path!r} is not a readable image: {exc}", path=path) from None


def image_stats(images: Iterable[tuple[str, str | None, bytes]], *, top: int = TOP_VALUES) -> dict[str, Any]:
    """Count, width/height ranges, most common sizes, modes and formats, and label distribution of images."""
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    labels: list[str | None] = []
    total_bytes = 0
    for path, label, data in images:
        img = open_image(data, path=path)
        sizes[img.size] += 1
        modes[img.mode] += 1
        formats[img.format or "unknown"] += 1
        labels.append(label)
        total_bytes += len(data)
    count = sum(sizes.values())

    def rng(axis: int) -> dict[str, Any] | None:
        if not count:
            return None
        vals = [size[axis] for size in sizes]
        mean = sum(size[axis] * n for size, n in sizes.items()) / count
        return {"min": min(vals), "max": max(vals), "mean": mean}

    return {"kind": "images", "files": count, "bytes": total_bytes, "width": rng(0), "height": rng(1),
            "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in sizes.most_common(top)],
            "modes": dict(modes.most_common()), "formats": dict(formats.most_common()),
            "label_distribution": label_distribution(labels) if any(lb is not None for lb in labels) else None}


def preview_rows(frame: pd.DataFrame, n: int = 20) -> list[dict[str, Any]]:
    """The first ``n`` rows as JSON-safe records (NaN → None)."""
    head = frame.head(n)
    return [{str(c): json_safe(v) for c, v in zip(head.columns, row)} for row in head.itertuples(index=False)]


def thumbnail(data: bytes, *, size: int = THUMBNAIL_PX, path: str = "image") -> bytes:
    """A PNG thumbnail no larger than ``size``×``size`` pixels, aspect ratio kept."""
    img = open_image(data, path=path)
    try:
        img.draft("RGB", (size, size))
        img = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB")
        img.thumbnail((size, size))
    except (OSError, ValueError) as exc:
        raise Invalid(f"{path!r} is not a readable image: {exc}", path=path) from None
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def thumbnails(images: Sequence[tuple[str, bytes]], *, limit: int = 32,
               size: int = THUMBNAIL_PX) -> list[dict[str, Any]]:
    """Thumbnails of the first ``limit`` images as ``{"path", "png"}`` records for a preview grid."""
    return [{"path": path, "png": thumbnail(data, size=size, path=path)} for path, data in list(images)[:limit]]


def file_stats(files: Iterable[tuple[str, int, str | None]], *, top: int = TOP_VALUES) -> dict[str, Any]:
    """Counts, sizes, extensions and labels of arbitrary files given as (path, size, label)."""
    sizes: list[int] = []
    extensions: Counter[str] = Counter()
    labels: list[str | None] = []
    for path, size, label in files:
        sizes.append(size)
        name = path.rsplit("/", 1)[-1]
        extensions[name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else "(none)"] += 1
        labels.append(label)
    count = len(sizes)
    return {"kind": "files", "files": count, "bytes": sum(sizes),
            "size": {"min": min(sizes), "max": max(sizes), "mean": sum(sizes) / count} if count else None,
            "extensions": dict(extensions.most_common(top)),
            "label_distribution": label_distribution(labels) if any(lb is not None for lb in labels) else None}
