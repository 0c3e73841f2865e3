"""The data models are evaluated and scored on: a tabular dataset version (or one split of it) as a table,
and the model's inputs and labels taken from it by the version's signature."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from officina.platform.datasets import repo
from officina.platform.datasets.entities import DatasetVersion
from officina.platform.datasets.formats import load_frame
from officina.platform.errors import Invalid, NotFound
from officina.platform.storage.blobs import BlobStore

TABLE_KINDS = ("tabular", "text")


@dataclass(frozen=True)
class Table:
    """Rows of one dataset version (all of them, or one recorded split's)."""

    dataset: str
    version: DatasetVersion
    frame: pd.DataFrame
    path: str
    split: str | None = None

    def describe(self) -> str:
        """``bc:2`` or ``bc:2 test split``."""
        return f"{self.dataset}:{self.version.number}" + (f" {self.split} split" if self.split else "")


def read_table(pool, blobs: BlobStore, team_id: int, dataset: str, ref: Any, *, split: str | None = None) -> Table:
    """A tabular version of a team's dataset as a DataFrame, or only the rows of its recorded ``split``.

    Raises:
        NotFound: no such dataset or version.
        Invalid: not a single-table version, or it has no such split.
    """
    if not isinstance(dataset, str) or not dataset or isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise Invalid("the dataset is named by {\"name\", \"version\"}", field="dataset")
    with pool.connection() as conn:
        found = repo.get_dataset(conn, team_id, dataset)
        version = repo.get_version(conn, found.id, str(ref)) if found else None
        if found is None or version is None:
            raise NotFound(f"dataset {dataset}:{ref} not found" if found else f"dataset {dataset!r} not found")
        files = repo.list_files(conn, version.id)
    if found.kind not in TABLE_KINDS or len(files) != 1:
        raise Invalid(f"{dataset}:{version.number} is not a tabular version (it is {found.kind} data, "
                      f"{len(files)} files); models are evaluated and scored on tables", field="dataset")
    (entry,) = files
    frame = load_frame(blobs.get_bytes(entry.sha256), entry.path, text=version.text_column,
                       label=version.label_column)
    if split is not None:
        frame = _split_rows(blobs, dataset, version, frame, split)
    return Table(dataset, version, frame, entry.path, split)


def _split_rows(blobs: BlobStore, dataset: str, version: DatasetVersion, frame: pd.DataFrame,
                split: str) -> pd.DataFrame:
    if not version.split_sha256:
        raise Invalid(f"{dataset}:{version.number} has no recorded split, so it has no {split!r} split",
                      field="split")
    splits = json.loads(blobs.get_bytes(version.split_sha256))["splits"]
    if split not in splits:
        raise Invalid(f"{dataset}:{version.number} has no {split!r} split (it has {', '.join(splits)})",
                      field="split")
    rows = sorted(int(i) for i in splits[split] if 0 <= int(i) < len(frame))
    if not rows:
        raise Invalid(f"the {split!r} split of {dataset}:{version.number} is empty", field="split")
    return frame.iloc[rows].reset_index(drop=True)


def feature_columns(frame: pd.DataFrame, signature: dict[str, Any], *,
                    exclude: tuple[str | None, ...] = ()) -> list[str]:
    """The table's columns the model takes, in input order: the signature's ``names``, else every numeric
    column not in ``exclude`` when their number matches the input width.

    Raises:
        Invalid: the model does not take a table, or the table lacks columns it needs.
    """
    shape = (signature.get("inputs") or {}).get("shape") or []
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
        raise Invalid(f"the model takes inputs of shape {shape}, not table rows [-1, columns]", field="signature")
    width = shape[1]
    names = (signature.get("inputs") or {}).get("names")
    if names:
        missing = [str(n) for n in names if n not in frame.columns]
        if missing:
            raise Invalid(f"the table lacks feature column{'s' if len(missing) > 1 else ''} the model takes: "
                          f"{', '.join(missing[:20])}", field="dataset", missing=missing[:20])
        if len(names) != width:
            raise Invalid(f"the signature names {len(names)} inputs but its shape is {shape}", field="signature")
        return [str(n) for n in names]
    numeric = [str(c) for c in frame.columns if c not in exclude and
               (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if len(numeric) != width:
        raise Invalid(f"the signature names no input columns, and the table has {len(numeric)} numeric columns "
                      f"besides the label where the model takes {width}", field="signature")
    return numeric


def features(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The columns as a float32 matrix (missing values NaN).

    Raises:
        Invalid: a column is not numeric.
    """
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        column = frame[name]
        if pd.api.types.is_bool_dtype(column):
            column = column.astype("float64")
        elif not pd.api.types.is_numeric_dtype(column):
            try:
                column = pd.to_numeric(column, errors="raise")
            except (TypeError, ValueError):
                raise Invalid(f"feature column {name!r} is not numeric", field="dataset", column=name) from None
        out[:, j] = column.to_numpy(dtype=np.float32, na_value=np.nan)
    return out


def label_column(table: Table, requested: str | None) -> str:
    """The label column: the one asked for, else the version's.

    Raises:
        Invalid: there is none, or the table lacks it.
    """
    name = requested or table.version.label_column
    columns = ", ".join(map(str, table.frame.columns[:30]))
    if not name:
        raise Invalid(f"{table.describe()} has no label column; name one with label_column (columns: {columns})",
                      field="label_column")
    if name not in table.frame.columns:
        raise Invalid(f"label column {name!r} is not in {table.describe()} (columns: {columns})", field="label_column")
    return name


def inputs_and_labels(table: Table, signature: dict[str, Any], requested_label: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(X float32, y)`` of the labelled rows of ``table`` as the model's signature wants them.

    Raises:
        Invalid: no label column, missing or non-numeric feature columns, or no labelled row.
    """
    label = label_column(table, requested_label)
    frame = table.frame[table.frame[label].notna()]
    if frame.empty:
        raise Invalid(f"{table.describe()} has no row with a label in {label!r}", field="dataset")
    columns = feature_columns(frame, signature, exclude=(label,))
    if label in columns:
        raise Invalid(f"the label column {label!r} is also one of the model's inputs", field="label_column")
    return features(frame, columns), frame[label].to_numpy()


def pinned_table(pool, blobs: BlobStore, team_id: int, spec: Any) -> Table:
    """The table a gate policy pins: ``{"name", "version", "split"?}``.

    Raises:
        Invalid: no dataset is pinned; NotFound: it does not exist.
    """
    if not isinstance(spec, dict) or not spec.get("name") or spec.get("version") is None:
        raise Invalid("the gate policy pins no dataset version ({\"dataset\": {\"name\", \"version\"}})",
                      field="dataset")
    return read_table(pool, blobs, team_id, spec["name"], spec["version"], split=spec.get("split") or None)
