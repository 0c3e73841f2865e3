"""Checkpoints of the active run: ``sdk.checkpoint.save(state, step)`` and ``sdk.checkpoint.load()``.

A checkpoint counts only once fully stored, so a job resumed after losing its worker loads the
last complete one. Torch objects are saved with ``torch.save`` and loaded with
``torch.load(weights_only=True)`` (nothing untrusted is unpickled).
"""
from __future__ import annotations

import io
import os
from typing import Any

from officina import sdk
from officina.sdk.errors import InvalidRequest, NotFound


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
        data = bytes(state)
    else:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
    return sdk.client().request("PUT", f"/runs/{_run_id(run_id)}/checkpoints/{step}", data=data,
                                headers={"Content-Type": "application/octet-stream"})["checkpoint"]


def load(*, run_id: str | None = None, step: int | str = "latest", raw: bool = True) -> tuple[int, Any] | None:
    """The latest (or given) checkpoint as ``(step, bytes)``, or ``(step, object)`` with ``raw=False``; None if none."""
    try:
        response = sdk.client().request_raw("GET", f"/runs/{_run_id(run_id)}/checkpoints/{step}")
    except NotFound:
        return None
    number = int(response.headers["X-Checkpoint-Step"])
    if raw:
        return number, response.content
    import torch

    return number, torch.load(io.BytesIO(response.content), weights_only=True)


def list(*, run_id: str | None = None) -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.checkpoint.list()
    return sdk.client().get(f"/runs/{_run_id(run_id)}/checkpoints")["checkpoints"]
