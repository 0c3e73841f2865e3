"""Experiment tracking: ``run = sdk.init(project=…)``, then log params, metrics, artifacts and models.

Metrics are buffered and sent in batches from a background thread. While the server cannot be
reached the points stay in memory (up to ``MAX_BUFFERED``) and are sent once it is back; the
server ignores a point it already has for (run, key, step), so a retried batch is never counted
twice. ``finish()`` (and interpreter exit) flushes what is left. Inside a job, ``init`` attaches
to the job's run (``OFFICINA_RUN_ID``).
"""
from __future__ import annotations

import atexit
import io
import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk.client import Client
from officina.sdk.errors import ConnectionFailed, InvalidRequest, OfficinaError, ServerError

BATCH = 1000
FLUSH_S = 0.5
MAX_BUFFERED = 1_000_000
SYSTEM_EVERY_S = 10.0

_active: "Run | None" = None


def _thread_client() -> Client:
    """A client per thread (requests sessions are not shared across threads), same URL and token."""
    base = sdk.client()
    return Client(base.url, base.token, timeout=base.timeout)


class Run:
    """A tracked run. Use it as a context manager, or call ``finish()``."""

    def __init__(self, data: dict[str, Any], *, system_metrics: bool = True):
        self.data = data
        self.id: str = data["id"]
        self._points: deque[dict[str, Any]] = deque()
        self._steps: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._sender = threading.Thread(target=self._send_loop, name=f"officina-run-{self.id[:8]}", daemon=True)
        self._sender.start()
        self._system = None
        if system_metrics:
            self._system = threading.Thread(target=self._system_loop, name="officina-system", daemon=True)
            self._system.start()
        atexit.register(self._atexit)

    def __repr__(self) -> str:
        return f"<Run {self.id[:8]} {self.data.get('project')}/{self.data.get('name')}>"

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish("failed" if exc_type else "finished")

    # -- logging ---------------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Merge parameters into the run (JSON values)."""
        sdk.client().post(f"/runs/{self.id}/params", {"params": params})

    def set_tags(self, tags: dict[str, Any]) -> None:
        sdk.client().request("PATCH", f"/runs/{self.id}", json={"tags": tags})

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Queue one point; ``step`` defaults to one more than this key's previous step."""
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Queue several points at one step. Non-finite values raise at once (the server refuses them)."""
        now = time.time()
        with self._lock:
            for key, value in metrics.items():
                value = float(value)
                if value != value or value in (float("inf"), float("-inf")):
                    raise InvalidRequest(f"metric {key!r}: value must be finite, got {value}")
                s = step if step is not None else self._steps.get(key, -1) + 1
                self._steps[key] = max(s, self._steps.get(key, -1))
                if len(self._points) >= MAX_BUFFERED:
                    self._points.popleft()
                    self.dropped += 1
                self._points.append({"key": key, "value": value, "step": int(s), "ts": now})
        if len(self._points) >= BATCH:
            self._wake.set()

    def log_artifact(self, path: str | os.PathLike, name: str | None = None, *, kind: str = "artifact",
                     meta: dict | None = None) -> dict[str, Any]:
        """Upload a file as an artifact of the run (``name`` defaults to the file name)."""
        data = Path(path).read_bytes()
        return self._put_artifact(name or Path(path).name, data, kind=kind, meta=meta)

    def _put_artifact(self, name: str, data: bytes, *, kind: str, meta: dict | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/octet-stream"}
        if meta:
            headers["X-Meta"] = json.dumps(meta)
        return sdk.client().request("PUT", f"/runs/{self.id}/artifacts/{quote(name)}?kind={kind}", data=data,
                                    headers=headers)["artifact"]

    def log_model(self, model: Any, name: str = "model", example_input: Any = None,
                  meta: dict | None = None) -> dict[str, Any]:
        """Save a torch model: TorchScript when it traces or scripts, else its state_dict; logged as kind=model."""
        import torch

        buf = io.BytesIO()
        fmt = "torchscript"
        try:
            with torch.no_grad():
                scripted = (torch.jit.trace(model, example_input) if example_input is not None
                            else torch.jit.script(model))
            torch.jit.save(scripted, buf)
        except Exception:
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            fmt = "state_dict"
        info = {"framework": "torch", "format": fmt, "torch": torch.__version__, **(meta or {})}
        if example_input is not None and hasattr(example_input, "shape"):
            info["input_shape"] = list(example_input.shape)
            info["input_dtype"] = str(example_input.dtype).replace("torch.", "")
        return self._put_artifact(f"{name}.pt", buf.getvalue(), kind="model", meta=info)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued point has been sent (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._idle:
            while self._points or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.2))
                self._wake.set()
        return True

    def finish(self, status: str = "finished", timeout: float = 60.0) -> None:
        """Flush the metrics and mark the run ended (a job's own run is ended by its job instead)."""
        global _active
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if not os.environ.get("OFFICINA_RUN_ID") == self.id:
            try:
                sdk.client().request("PATCH", f"/runs/{self.id}", json={"status": status})
            except OfficinaError:
                pass
        if _active is self:
            _active = None

    def _atexit(self) -> None:
        if not self._stop.is_set():
            self.finish("finished", timeout=15.0)

    # -- background threads ----------------------------------------------------------------------------
    def _send_loop(self) -> None:
        client = _thread_client()
        backoff = 0.5
        while True:
            self._wake.wait(FLUSH_S)
            self._wake.clear()
            while True:
                with self._lock:
                    batch = [self._points.popleft() for _ in range(min(BATCH * 10, len(self._points)))]
                    self._in_flight = len(batch)
                if not batch:
                    break
                try:
                    client.post(f"/runs/{self.id}/metrics", {"metrics": batch})
                    backoff = 0.5
                except (ConnectionFailed, ServerError) as exc:  # keep the points; try again
                    self.last_error = str(exc)
                    with self._lock:
                        self._points.extendleft(reversed(batch))
                        self._in_flight = 0
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                except OfficinaError as exc:  # refused for good (e.g. bad key): drop this batch, say why
                    self.last_error = str(exc)
                    self.dropped += len(batch)
                finally:
                    with self._idle:
                        self._in_flight = 0
                        self._idle.notify_all()
            if self._stop.is_set() and not self._points:
                return

    def _system_loop(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        psutil.cpu_percent(None)
        step = 0
        while not self._stop.wait(SYSTEM_EVERY_S):
            memory = psutil.virtual_memory()
            points = {"system/cpu_percent": psutil.cpu_percent(None), "system/memory_percent": memory.percent,
                      "system/memory_used_mb": memory.used / 2**20}
            points.update(_gpu_metrics())
            self.log_metrics(points, step=step)
            step += 1


def _gpu_metrics() -> dict[str, float]:
    """GPU utilisation and memory from torch.cuda where a GPU is present (else nothing)."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    out: dict[str, float] = {}
    for i in range(torch.cuda.device_count()):
        try:
            out[f"system/gpu{i}_utilization"] = float(torch.cuda.utilization(i))
        except Exception:  # needs pynvml; memory still works
            pass
        free, total = torch.cuda.mem_get_info(i)
        out[f"system/gpu{i}_memory_used_mb"] = (total - free) / 2**20
    return out


def init(project: str = "default", name: str | None = None, params: dict[str, Any] | None = None,
         tags: dict[str, Any] | None = None, team: str | None = None, *, system_metrics: bool = True) -> Run:
    """Start a run (or, inside a job, attach to the job's run) and make it the active one."""
    global _active
    run_id = os.environ.get("OFFICINA_RUN_ID")
    if run_id:
        data = sdk.client().get(f"/runs/{run_id}")["run"]
    else:
        from officina.sdk.datasets import _team

        body = {"project": project, "params": params or {}, "tags": tags or {}}
        if name:
            body["name"] = name
        data = sdk.client().post(f"/teams/{quote(_team(team), safe='')}/runs", body)["run"]
    _active = Run(data, system_metrics=system_metrics)
    if run_id and params:
        _active.log_params(params)
    return _active


def active_run() -> Run | None:
    return _active


def get_run(run_id: str) -> dict[str, Any]:
    """A run's record (params, tags, status, last metric values)."""
    return sdk.client().get(f"/runs/{quote(run_id, safe='')}")["run"]


def history(run_id: str, key: str, max_points: int = 1000) -> list[list]:
    """``[step, value, ts]`` points of one metric (downsampled above ``max_points``)."""
    return sdk.client().get(f"/runs/{quote(run_id, safe='')}/metrics/{quote(key)}?max_points={max_points}")["points"]


def list_runs(team: str | None = None, *, project: str | None = None, sort: str | None = None) -> list[dict]:
    from officina.sdk.datasets import _team

    query = "&".join(f"{k}={quote(v)}" for k, v in (("project", project), ("sort", sort)) if v)
    return sdk.client().get(f"/teams/{quote(_team(team), safe='')}/runs" + (f"?{query}" if query else ""))["runs"]
