"""Load a model file into something that predicts: ONNX Runtime for ONNX, torch for TorchScript.

Neither path unpickles arbitrary objects: an ONNX file is a protobuf, and a TorchScript archive is read by
TorchScript's restricted loader (``torch.jit.load``), which builds only TorchScript types.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from officina.platform.errors import Invalid


class Predictor(Protocol):
    """A loaded model: a float32 batch in, a float32 batch out."""

    runtime: str

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class OnnxPredictor:
    session: Any
    input_name: str
    runtime: str = "onnxruntime"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: batch})[0])


@dataclass
class TorchScriptPredictor:
    module: Any
    runtime: str = "torchscript"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch)))
        return out.detach().cpu().numpy()


def load_onnx(data: bytes, *, threads: int = 1) -> OnnxPredictor:
    """An ONNX Runtime session over ``data`` (CPU; ``threads`` intra-op threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise Invalid(f"not a loadable ONNX model: {str(exc).splitlines()[0][:200]}", model="format") from None
    return OnnxPredictor(session=session, input_name=session.get_inputs()[0].name)


def load_torchscript(data: bytes, *, threads: int | None = None) -> TorchScriptPredictor:
    """A TorchScript module from an archive made by ``torch.jit.save`` (evaluation mode). ``threads`` sets torch's
    intra-op threads for the whole process (a server of small models wants 1: its parallelism is its requests)."""
    import torch

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and friends for bad archives
        raise Invalid(f"not a loadable TorchScript model: {str(exc).splitlines()[0][:200]}",
                      model="format") from None
    module.eval()
    return TorchScriptPredictor(module=module)


def load(fmt: str, data: bytes, *, threads: int = 1, threads_for_torch: bool = False) -> Predictor:
    """Load model bytes of format ``onnx`` (or ``onnx_int8``) or ``torchscript``; ``threads`` is ONNX Runtime's
    intra-op threads (and torch's too, process-wide, with ``threads_for_torch``)."""
    if fmt in ("onnx", "onnx_int8"):
        return load_onnx(data, threads=threads)
    if fmt == "torchscript":
        return load_torchscript(data, threads=threads if threads_for_torch else None)
    raise Invalid(f"unknown model format {fmt!r}; known: onnx, onnx_int8, torchscript", model="format")
