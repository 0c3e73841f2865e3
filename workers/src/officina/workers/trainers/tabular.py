"""Built-in tabular model: an MLP that classifies or regresses the label column of a tabular version.

Run as a job with ``trainer: "tabular"`` (``python -m officina.workers.trainers.tabular``). The
numeric (and boolean) columns are the features; the model standardizes them itself with the training
rows' statistics (a missing value counts as the mean), so the logged model takes raw feature rows in
the order of the summary's ``features``. Regression models predict in the label's own units.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from officina.workers.trainers import job
from officina.workers.trainers.common import (COMMON_PARAMS, Tracker, TrainerError, kept_rows_split, make_split,
                                              resolve_params, setup)
from officina.workers.trainers.loop import Problem, fit

PARAMS = {**COMMON_PARAMS, "epochs": (int, 60, 1), "task": (str, None, None), "dropout": (float, 0.1, 0.0)}
MAX_CLASSES = 20  # a whole-number label with at most this many values is a class label


class Standardize(nn.Module):
    """Missing values become the mean, then ``(x - mean) / std`` per feature."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.mean, x)
        return (x - self.mean) / self.std


class Rescale(nn.Module):
    """One output column to label units: ``x * std + mean``, shaped ``(N, 1)``."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def build_mlp(mean: torch.Tensor, std: torch.Tensor, hidden: int, outputs: int, dropout: float,
              target: tuple[float, float] | None = None) -> nn.Sequential:
    """Standardize, two hidden ReLU layers, and ``outputs`` logits (or one value rescaled by ``target``)."""
    layers: list[nn.Module] = [Standardize(mean, std), nn.Linear(len(mean), hidden), nn.ReLU(), nn.Dropout(dropout),
                               nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, outputs)]
    if target is not None:
        layers.append(Rescale(*target))
    return nn.Sequential(*layers)


def choose_task(labels: Sequence[Any] | np.ndarray) -> str:
    """"classification" for non-numeric labels or whole numbers with few values, else "regression"."""
    values = np.asarray(labels)
    if values.dtype.kind not in "iuf":
        return "classification"
    distinct = np.unique(values)
    whole = bool(np.all(np.mod(distinct, 1) == 0))
    return "classification" if whole and len(distinct) <= MAX_CLASSES else "regression"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def train_tabular(features: np.ndarray, labels: Sequence[Any] | np.ndarray, params: Mapping[str, Any] | None,
                  tracker: Tracker, *, feature_names: Sequence[str] | None = None, task: str | None = None,
                  split: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Train the MLP on ``features`` (``(N, D)`` numbers, NaN for missing) and ``labels`` (any values).

    ``task`` (or the ``task`` param) is "classification" or "regression"; by default :func:`choose_task`
    decides. ``split`` gives recorded train/val/test row indices, else a seeded 80/10/10 split (stratified
    for classification).

    Raises:
        TrainerError: bad params, shapes or task.
    """
    params = resolve_params(params, PARAMS)
    device = setup(params)
    x = np.array(features, dtype=np.float32)  # a writable copy
    raw = np.asarray(labels)
    if x.ndim != 2 or len(x) != len(raw) or len(x) < 3 or x.shape[1] == 0:
        raise TrainerError(f"need at least 3 rows of at least one feature with one label each "
                           f"(got features {x.shape}, {len(raw)} labels)")
    task = task or params["task"] or choose_task(raw)
    if task not in ("classification", "regression"):
        raise TrainerError(f"task must be classification or regression, not {task!r}")
    names = [str(n) for n in feature_names] if feature_names is not None else [f"x{i}" for i in range(x.shape[1])]
    classes: list[Any] = []
    if task == "classification":
        classes, codes = np.unique(raw, return_inverse=True)
        classes = [_plain(c) for c in classes]
        y = torch.as_tensor(codes.reshape(-1), dtype=torch.int64)
        parts = make_split(len(y), params["seed"], strata=codes.reshape(-1), recorded=split)
    else:
        try:
            y = torch.as_tensor(raw.astype(np.float32))
        except ValueError:
            raise TrainerError("regression needs numeric labels") from None
        parts = make_split(len(y), params["seed"], recorded=split)
    train_x = x[parts.train]
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(train_x, axis=0))
        std = np.nan_to_num(np.nanstd(train_x, axis=0), nan=1.0)
    std[std < 1e-6] = 1.0
    target = None
    if task == "regression":
        train_y = y[torch.from_numpy(parts.train)]
        target = (float(train_y.mean()), max(float(train_y.std()), 1e-6) if len(train_y) > 1 else 1.0)
    model = build_mlp(torch.from_numpy(mean), torch.from_numpy(std), params["hidden"],
                      len(classes) if task == "classification" else 1, params["dropout"], target)
    meta = {"trainer": "tabular", "task": task, "features": names, "hidden": params["hidden"], "classes": classes}
    xt = torch.from_numpy(x)
    problem = Problem(model=model, task=task, meta=meta, target_scale=target[1] if target else 1.0,
                      inputs={k: xt[torch.from_numpy(getattr(parts, k))] for k in ("train", "val", "test")},
                      targets={k: y[torch.from_numpy(getattr(parts, k))] for k in ("train", "val", "test")})
    return fit(problem, params, tracker, device)


def load_table(version: Any, label_column: str | None) -> tuple[np.ndarray, np.ndarray, list[str],
                                                                 dict[str, list[int]] | None]:
    """``(features, labels, feature names, recorded split or None)`` of a tabular version; rows without a
    label are left out and the split's row numbers follow.

    Raises:
        TrainerError: not a tabular version, no label column, or no numeric feature.
    """
    import pandas as pd

    if version.kind not in ("tabular", "text"):
        raise TrainerError(f"the tabular trainer reads tabular versions; {version.name}:{version.number} "
                           f"is {version.kind!r}")
    label = label_column or version.label_column
    frame = version.to_pandas()
    if not label or label not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise TrainerError(f"label column {label!r} is not in the table (columns: {columns})" if label
                           else f"name the label column with the label_column param (columns: {columns})")
    names = [str(c) for c in frame.columns if c != label and
             (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if not names:
        raise TrainerError("the table has no numeric feature columns besides the label")
    keep = frame[label].notna().to_numpy()
    rows = frame[keep]
    column = rows[label]
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        labels = column.astype(str).to_numpy()
    else:
        labels = column.to_numpy(dtype=np.float64)
    recorded = kept_rows_split(version.splits(), keep) if version.split_summary else None
    return rows[names].to_numpy(dtype=np.float32, na_value=np.nan), labels, names, recorded


def train_version(version: Any, params: Mapping[str, Any], tracker: Tracker) -> dict[str, Any]:
    """Load a tabular version and train on it (the job's entrypoint body)."""
    label_column = resolve_params(params, PARAMS)["label_column"]
    features, labels, names, recorded = load_table(version, label_column)
    return train_tabular(features, labels, params, tracker, feature_names=names, split=recorded)


def main() -> None:
    """``python -m officina.workers.trainers.tabular`` inside a job."""
    job.main("tabular", train_version)


if __name__ == "__main__":
    main()
