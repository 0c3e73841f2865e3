"""Batch prediction: score every row of a tabular dataset version and store the scored table as a new
version of the output dataset."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from officina.platform.models.batch_output import store_table
from officina.platform.storage.blobs import BlobStore
from officina.workers.models.data import feature_columns, features, read_table
from officina.workers.models.evaluate import softmax, task_of
from officina.workers.models.runtime import Predictor, load

CHUNK_ROWS = 4096


def output_column(frame: pd.DataFrame, name: str) -> str:
    """``name``, or ``name_2``, ``name_3`` … when the table already has it."""
    candidate, n = name, 1
    while candidate in frame.columns:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def score(predictor: Predictor, signature: dict[str, Any], frame: pd.DataFrame, *, label: str | None = None,
          chunk: int = CHUNK_ROWS) -> pd.DataFrame:
    """``frame`` plus a ``prediction`` column (class label or value) and, for classification, ``confidence``
    (the top softmax probability). Rows the model scores as non-finite get empty predictions.

    Raises:
        Invalid: the table lacks the model's inputs, or the outputs do not fit the signature.
    """
    columns = feature_columns(frame, signature, exclude=(label,))
    predictions: list[Any] = []
    confidence: list[float | None] = []
    task, classes = None, None
    for start in range(0, len(frame), chunk):
        out = predictor.predict(features(frame.iloc[start:start + chunk], columns))
        width = out.shape[1] if out.ndim == 2 else 1
        task = task or task_of(signature, width)
        if task == "classification":
            classes = classes or signature.get("classes") or list(range(width))
            probs = softmax(out)
            ok = np.all(np.isfinite(probs), axis=1)
            top = probs.argmax(axis=1)
            predictions += [_plain(classes[i]) if good else None for i, good in zip(top, ok)]
            confidence += [float(p[i]) if good else None for p, i, good in zip(probs, top, ok)]
        else:
            values = out.reshape(len(out), -1)[:, 0].astype(np.float64)
            predictions += [float(v) if np.isfinite(v) else None for v in values]
    scored = frame.copy()
    scored[output_column(frame, "prediction")] = pd.Series(predictions, index=frame.index, dtype=object
                                                           if task == "classification" else "float64")
    if task == "classification":
        scored[output_column(scored, "confidence")] = pd.Series(confidence, index=frame.index, dtype="float64")
    return scored


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def run_batch(services, task: dict[str, Any]) -> tuple[int, int]:
    """Score the batch's source version with its model version and store the output; return
    (output version number, rows)."""
    blobs = BlobStore(services.store)
    version, source = task["version"], task["source"]
    table = read_table(services.pool, blobs, task["team_id"], source["dataset"], source["version"])
    predictor = load(version["format"], blobs.get_bytes(version["sha256"]))
    scored = score(predictor, version.get("signature") or {}, table.frame, label=table.version.label_column)
    origin = {"source": "batch_prediction", "batch": str(task["id"]),
              "model": {"name": version.get("model"), "version": version.get("version")},
              "from": {"dataset": table.dataset, "version": table.version.number}}
    number = store_table(services.pool, blobs, team_id=task["team_id"], dataset=task["output"]["dataset"],
                         frame=scored, fmt="parquet" if table.version.format == "parquet" else "csv",
                         user_id=task.get("created_by"), label_column=table.version.label_column,
                         message=f"batch prediction by {version.get('model')} v{version.get('version')} "
                                 f"on {table.dataset}:{table.version.number}",
                         origin=origin, parent_id=table.version.id)
    return number, len(scored)

