"""Exports of a model version: ONNX, TorchScript and a dynamically int8-quantized ONNX variant.

Every export is checked before it is kept: it is loaded in its own runtime and run against the
original on held-out inputs, and its size and latency are measured next to the original's.
"""
from __future__ import annotations

import io
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from officina.platform.errors import Invalid, OfficinaError
from officina.platform.storage.blobs import BlobStore
from officina.workers.models.data import feature_columns, features, pinned_table
from officina.workers.models.runtime import Predictor, load

FORMATS = ("onnx", "torchscript", "onnx_int8")
HELD_OUT_ROWS = 256
LATENCY_RUNS = {1: 100, 64: 30}
WARMUP = 5


def input_shape(signature: dict[str, Any], batch: int) -> tuple[int, ...]:
    """The signature's input shape with the batch (and any other unknown) dimension set to ``batch``/1.

    Raises:
        Invalid: the signature has no usable input shape.
    """
    shape = (signature.get("inputs") or {}).get("shape")
    if not isinstance(shape, Sequence) or not shape or not all(isinstance(d, int) for d in shape):
        raise Invalid(f"the signature's input shape {shape!r} is not a list of integers", field="signature")
    return (batch, *(d if d > 0 else 1 for d in shape[1:]))


def random_inputs(signature: dict[str, Any], rows: int = HELD_OUT_ROWS, *, seed: int = 0) -> np.ndarray:
    """``rows`` seeded standard-normal inputs of the signature's shape (float32)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(input_shape(signature, rows)).astype(np.float32)


def to_onnx(torchscript: bytes, signature: dict[str, Any]) -> bytes:
    """A TorchScript archive exported to ONNX with a dynamic batch dimension (TorchScript exporter).

    Raises:
        Invalid: the archive does not load or the export fails.
    """
    import torch

    module = load("torchscript", torchscript).module
    example = torch.zeros(input_shape(signature, 2), dtype=torch.float32)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), buf, input_names=["input"], output_names=["output"],
                              dynamo=False, dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise Invalid(f"ONNX export failed: {_first_line(exc)}", field="format") from None
    return buf.getvalue()


def to_int8(onnx_bytes: bytes) -> bytes:
    """An ONNX model with its weights dynamically quantized to int8 (activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="officina-int8-") as tmp:
        src, dst = Path(tmp, "model.onnx"), Path(tmp, "model.int8.onnx")
        src.write_bytes(onnx_bytes)
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise their own types
            raise Invalid(f"int8 quantization failed: {_first_line(exc)}", field="format") from None
        return dst.read_bytes()


def convert(fmt: str, source_format: str, source: bytes, signature: dict[str, Any]) -> bytes:
    """The bytes of the ``fmt`` export of a model file of ``source_format``.

    Raises:
        Invalid: an unknown format, or a conversion that cannot be made.
    """
    if fmt not in FORMATS:
        raise Invalid(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}", field="format")
    if fmt == "torchscript":
        if source_format != "torchscript":
            raise Invalid("an ONNX version can't be converted to TorchScript", field="format")
        return source
    onnx_bytes = source if source_format == "onnx" else to_onnx(source, signature)
    return onnx_bytes if fmt == "onnx" else to_int8(onnx_bytes)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the block, as the ONNX Runtime sessions here do: latencies of the
    two runtimes compare fairly and are not skewed by other work on the machine."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def timed_ms(predict: Callable[[np.ndarray], Any], batches: Sequence[np.ndarray], *,
             warmup: int = WARMUP) -> list[float]:
    """Milliseconds of each call of ``predict`` over ``batches`` (after ``warmup`` untimed calls)."""
    times = []
    with one_thread():
        for i in range(min(warmup, len(batches))):
            predict(batches[i])
        for batch in batches:
            start = time.perf_counter()
            predict(batch)
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def batch_latency(predictor: Predictor, inputs: np.ndarray) -> dict[str, float]:
    """Median milliseconds per call at batch 1 and batch 64 (rows cycled from ``inputs``)."""
    out = {}
    for size, runs in LATENCY_RUNS.items():
        idx = np.arange(runs * size) % len(inputs)
        batches = [np.ascontiguousarray(inputs[idx[i * size:(i + 1) * size]]) for i in range(runs)]
        out[f"batch{size}_p50"] = round(float(np.median(timed_ms(predictor.predict, batches))), 4)
    return out


def compare(reference: np.ndarray, other: np.ndarray, *, classification: bool) -> dict[str, Any]:
    """How far ``other`` is from ``reference``: max absolute difference and (classification) argmax agreement."""
    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if reference.shape != other.shape:
        raise Invalid(f"the outputs differ in shape: {reference.shape} vs {other.shape}", field="parity")
    diff = np.abs(reference - other)
    out: dict[str, Any] = {"max_abs_diff": float(np.nanmax(diff)) if diff.size else 0.0,
                           "mean_abs_diff": float(np.nanmean(diff)) if diff.size else 0.0, "rows": len(reference),
                           "agreement": None}
    if classification and reference.ndim == 2 and reference.shape[1] > 1:
        out["agreement"] = float(np.mean(reference.argmax(axis=1) == other.argmax(axis=1)))
    return out


def predict_all(predictor: Predictor, inputs: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Outputs for every row of ``inputs``, predicted ``chunk`` rows at a time."""
    parts = [predictor.predict(np.ascontiguousarray(inputs[i:i + chunk])) for i in range(0, len(inputs), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)


def export(fmt: str, version: dict[str, Any], source: bytes, held_out: np.ndarray, *,
           inputs: str = "random normal") -> tuple[bytes, dict[str, Any]]:
    """Make and check the ``fmt`` export of a model version; return its bytes and its report.

    ``version`` is ``{"format", "signature", …}``; ``held_out`` are float32 input rows and ``inputs``
    says where they came from.

    Raises:
        Invalid: the conversion is impossible or the export does not load or run.
    """
    signature = version.get("signature") or {}
    data = convert(fmt, version["format"], source, signature)
    original, exported = load(version["format"], source), load(fmt, data)
    held_out = np.ascontiguousarray(held_out, dtype=np.float32)
    try:
        expected, got = predict_all(original, held_out), predict_all(exported, held_out)
    except Invalid:
        raise
    except Exception as exc:  # noqa: BLE001 - runtimes raise their own types
        raise Invalid(f"the {fmt} export does not run on the held-out inputs: {_first_line(exc)}",
                      field="format") from None
    classification = signature.get("task") == "classification" or bool(signature.get("classes"))
    report = {"format": fmt, "size": len(data), "source_size": len(source), "source_format": version["format"],
              "runtime": exported.runtime, "source_runtime": original.runtime, "inputs": inputs, "threads": 1,
              "latency_ms": batch_latency(exported, held_out), "source_latency_ms": batch_latency(original, held_out),
              "parity": compare(expected, got, classification=classification)}
    return data, report


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def held_out_inputs(services, team_id: int | None, policy: dict[str, Any], signature: dict[str, Any],
                    rows: int = HELD_OUT_ROWS) -> tuple[np.ndarray, str]:
    """Inputs to check an export on, and where they came from: up to ``rows`` rows of the policy's pinned
    dataset when it has one (and it can be read), else seeded standard-normal rows."""
    spec = (policy or {}).get("dataset")
    if not spec or team_id is None:
        return random_inputs(signature, rows), "random normal"
    try:
        table = pinned_table(services.pool, BlobStore(services.store), team_id, spec)
        label = spec.get("label_column") or table.version.label_column
        frame = table.frame.iloc[:rows]
        return features(frame, feature_columns(frame, signature, exclude=(label,))), table.describe()
    except OfficinaError as exc:
        return random_inputs(signature, rows), f"random normal ({exc.message})"


def run_export(services, task: dict[str, Any], fmt: str) -> tuple[bytes, dict[str, Any]]:
    """Make the export a claimed export task asks for; return its bytes and report."""
    version = task["version"]
    source = BlobStore(services.store).get_bytes(version["sha256"])
    held_out, inputs = held_out_inputs(services, task.get("team_id"), task.get("policy") or {},
                                       version.get("signature") or {})
    return export(fmt, version, source, held_out, inputs=inputs)
