"""Evaluate a model version for its gates: metrics on a pinned dataset, per-class recall, single-row
latency in its own runtime, and parity of its ONNX export with the original."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from officina.platform.errors import Invalid
from officina.platform.storage.blobs import BlobStore
from officina.workers.models.data import inputs_and_labels, pinned_table
from officina.workers.models.export import compare, predict_all, timed_ms, to_onnx
from officina.workers.models.runtime import Predictor, load

LATENCY_CALLS = 200
LATENCY_WARMUP = 10
CONFUSION_MAX_CLASSES = 30


def task_of(signature: dict[str, Any], width: int) -> str:
    """``classification`` or ``regression``: the signature's task, else classes → classification,
    one output → regression.

    Raises:
        Invalid: it cannot be told.
    """
    task = signature.get("task")
    if task in ("classification", "regression"):
        return task
    if signature.get("classes"):
        return "classification"
    if width == 1:
        return "regression"
    raise Invalid("the signature gives no task and no classes; set \"task\" to evaluate it", field="signature")


def label_key(value: Any) -> Any:
    """A label compared by value: numbers (and numeric text) as floats, anything else as text."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else str(value)


def label_name(value: Any) -> str:
    """A label as a JSON key: ``0`` for 0.0, else its text."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value.item() if isinstance(value, np.generic) else value)


def encode(labels: Sequence[Any], classes: Sequence[Any]) -> np.ndarray:
    """Class index of each label (-1 for a label the model does not know)."""
    index = {label_key(c): i for i, c in enumerate(classes)}
    return np.array([index.get(label_key(v), -1) for v in labels], dtype=np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits, axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(outputs: np.ndarray, y: Sequence[Any], classes: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, macro F1 and recall, log loss, and per-class recall, precision and support."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

    if outputs.ndim != 2 or outputs.shape[1] != len(classes):
        raise Invalid(f"the model outputs {outputs.shape[1:]} scores per row for {len(classes)} classes",
                      field="signature")
    codes, pred = encode(y, classes), outputs.argmax(axis=1)
    probs = softmax(outputs)
    labels = list(range(len(classes)))
    present = sorted(set(codes[codes >= 0].tolist()))
    known = codes >= 0
    precision, recall, _, support = precision_recall_fscore_support(codes, pred, labels=labels, zero_division=0)
    metrics: dict[str, Any] = {"accuracy": float(accuracy_score(codes, pred)),
                               "macro_f1": float(f1_score(codes, pred, labels=present, average="macro",
                                                          zero_division=0)) if present else 0.0,
                               "macro_recall": float(np.mean(recall[present])) if present else 0.0,
                               "macro_precision": float(np.mean(precision[present])) if present else 0.0,
                               "log_loss": None}
    if known.any() and np.all(np.isfinite(probs[known])):
        metrics["log_loss"] = float(log_loss(codes[known], probs[known], labels=labels))
    names = [label_name(c) for c in classes]
    # A class without evaluation rows has no recall: it is left out of "recall" (its support says 0).
    per_class = {"recall": {n: float(r) for n, r, s in zip(names, recall, support) if s},
                 "precision": {n: float(p) for n, p in zip(names, precision)},
                 "support": {n: int(s) for n, s in zip(names, support)}}
    out = {"metrics": metrics, "per_class": per_class, "unknown_labels": int((~known).sum())}
    if len(classes) <= CONFUSION_MAX_CLASSES:
        out["confusion"] = {"labels": names, "matrix": confusion_matrix(codes[known], pred[known],
                                                                        labels=labels).tolist()}
    return out


def regression_metrics(outputs: np.ndarray, y: Sequence[Any]) -> dict[str, Any]:
    """RMSE, MAE and R² of one output column against numeric labels."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    if outputs.ndim == 2 and outputs.shape[1] != 1:
        raise Invalid(f"a regression model outputs one value per row, this one {outputs.shape[1]}", field="signature")
    try:
        truth = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise Invalid("regression labels must be numbers", field="label_column") from None
    pred = outputs.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(pred)):
        raise Invalid("the model predicts non-finite values on the evaluation rows", field="model")
    return {"metrics": {"rmse": float(math.sqrt(mean_squared_error(truth, pred))),
                        "mae": float(mean_absolute_error(truth, pred)),
                        "r2": float(r2_score(truth, pred)) if len(truth) > 1 else None},
            "per_class": None}


def single_row_latency(predictor: Predictor, x: np.ndarray, calls: int = LATENCY_CALLS) -> dict[str, Any]:
    """Percentiles of single-row prediction time (ms) over ``calls`` calls, after a warm-up."""
    rows = [np.ascontiguousarray(x[i % len(x)][None]) for i in range(calls)]
    times = timed_ms(predictor.predict, rows, warmup=LATENCY_WARMUP)
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {"p50": round(float(p50), 4), "p95": round(float(p95), 4), "p99": round(float(p99), 4),
            "mean": round(float(np.mean(times)), 4), "calls": calls, "batch": 1, "threads": 1,
            "runtime": predictor.runtime}


def evaluate(predictor: Predictor, signature: dict[str, Any], x: np.ndarray, y: Sequence[Any], *,
             parity_tolerance: float | None = None, export_onnx: Callable[[], bytes | None] | None = None,
             latency_calls: int = LATENCY_CALLS) -> dict[str, Any]:
    """Results of a model on labelled rows: metrics, per-class figures, latency and (with ``export_onnx``,
    which returns the ONNX file or None when the version itself is ONNX) export parity.

    Raises:
        Invalid: the outputs do not fit the signature or the labels.
    """
    if len(x) == 0:
        raise Invalid("there are no rows to evaluate on", field="dataset")
    x = np.ascontiguousarray(x, dtype=np.float32)
    outputs = predict_all(predictor, x)
    width = outputs.shape[1] if outputs.ndim == 2 else 1
    task = task_of(signature, width)
    if task == "classification":
        classes = signature.get("classes") or list(range(width))
        scored = classification_metrics(outputs, y, classes)
    else:
        scored = regression_metrics(outputs, y)
    results: dict[str, Any] = {"rows": int(len(x)), "task": task, **scored,
                               "latency_ms": single_row_latency(predictor, x, latency_calls), "parity": None}
    if export_onnx is not None:
        try:
            results["parity"] = parity(outputs, export_onnx(), x, classification=task == "classification",
                                       tolerance=parity_tolerance)
        except Invalid as exc:  # a model that cannot be exported fails the parity gate, not the evaluation
            results["parity"] = {"format": "onnx", "error": exc.message, "tolerance": parity_tolerance,
                                 "within_tolerance": False}
    return results


def parity(expected: np.ndarray, onnx_bytes: bytes | None, x: np.ndarray, *, classification: bool,
           tolerance: float | None) -> dict[str, Any]:
    """How closely ONNX Runtime running ``onnx_bytes`` reproduces ``expected`` on ``x``
    (``onnx_bytes`` None: the version is itself ONNX, so it agrees with itself)."""
    got = expected if onnx_bytes is None else predict_all(load("onnx", onnx_bytes), x)
    out = {"format": "onnx", **compare(expected, got, classification=classification), "tolerance": tolerance}
    if onnx_bytes is None:
        out["note"] = "the version is ONNX itself"
    out["within_tolerance"] = None if tolerance is None else bool(out["max_abs_diff"] <= tolerance)
    return out


def run_evaluation(services, task: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a claimed evaluation's version on its policy's pinned dataset (the model service compares
    the results with the alias holder's own evaluation on the same pin)."""
    blobs = BlobStore(services.store)
    policy, version = task.get("policy") or {}, task["version"]
    spec = policy.get("dataset")
    table = pinned_table(services.pool, blobs, task["team_id"], spec)
    signature = version.get("signature") or {}
    x, y = inputs_and_labels(table, signature, spec.get("label_column"))
    source = blobs.get_bytes(version["sha256"])
    export_onnx = (lambda: to_onnx(source, signature)) if version["format"] == "torchscript" else (lambda: None)
    results = evaluate(load(version["format"], source), signature, x, y,
                       parity_tolerance=policy.get("parity_tolerance"), export_onnx=export_onnx)
    results["dataset"] = {"name": table.dataset, "version": table.version.number, "split": table.split,
                          "label_column": spec.get("label_column") or table.version.label_column}
    return results

