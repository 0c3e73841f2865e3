"""Checkpoints of the active run: ``sdk.checkpoint.save(state, step)`` and ``sdk.checkpoint.load()``.

A checkpoint counts only once fully stored, so a job resumed after losing its worker loads the
last complete one. Bytes are stored as they are; anything else (a state dict, tensors) through
``torch.save``, and is loaded back with ``torch.load(weights_only=True)`` (nothing untrusted is
unpickled). ``load`` returns what was saved: bytes for bytes, the object for an object.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from officina import sdk
from officina.sdk.errors import InvalidRequest, NotFound, OfficinaError


def _run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    from officina.sdk.tracking import active_run

    run = active_run()
    if run is not None:
        return run.id
    env = os.environ.get("OFFICINA_RUN_ID")
    if env:
        return env
    raise InvalidRequest("no active run: call sdk.init() first or pass run_id=")


def save(state: Any, step: int, *, run_id: str | None = None) -> dict[str, Any]:
    """Store a checkpoint at ``step``: bytes as they are, anything else through ``torch.save``."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidRequest("step must be a non-negative integer")
    if isinstance(state, (bytes, bytearray, memoryview)):
        data, fmt = bytes(state), "bytes"
    else:
        try:
            import torch
        except ImportError:
            raise InvalidRequest("save bytes, or install torch to save other objects") from None
        buf = io.BytesIO()
        torch.save(state, buf)
        data, fmt = buf.getvalue(), "torch"
    return sdk.client().request("PUT", f"/runs/{_run_id(run_id)}/checkpoints/{step}?format={fmt}", data=data,
                                headers={"Content-Type": "application/octet-stream"})["checkpoint"]


def load(*, run_id: str | None = None, step: int | str = "latest",
         raw: bool | None = None) -> tuple[int, Any] | None:
    """The latest (or given) checkpoint as ``(step, what was saved)``, or None when there is none.

    ``raw=True`` always returns the bytes; ``raw=False`` always loads them with
    ``torch.load(weights_only=True)``; by default an object saved through torch comes back loaded.
    """
    try:
        response = sdk.client().request_raw("GET", f"/runs/{_run_id(run_id)}/checkpoints/{step}")
    except NotFound:
        return None
    number = int(response.headers["X-Checkpoint-Step"])
    expected = response.headers.get("X-Content-SHA256")
    if expected and hashlib.sha256(response.content).hexdigest() != expected:
        raise OfficinaError(f"checkpoint at step {number} arrived damaged (sha256 mismatch); try again")
    if raw is None:
        raw = response.headers.get("X-Checkpoint-Format", "bytes") != "torch"
    if raw:
        return number, response.content
    import torch

    return number, torch.load(io.BytesIO(response.content), weights_only=True)


def list(*, run_id: str | None = None) -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.checkpoint.list()
    """The run's checkpoints: step, sha256, size, format, attempt, created_at."""
    return sdk.client().get(f"/runs/{_run_id(run_id)}/checkpoints")["checkpoints"]
