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
import math
import operator
import os
import re
import shutil
import subprocess
import sys
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
KEY = re.compile(r"^[A-Za-z0-9_\-./: ]{1,250}$")  # as the server checks it
MAX_STEP = 2**62

_active: "Run | None" = None


def _thread_client() -> Client:
    """A client per thread (requests sessions are not shared across threads), same URL and token."""
    base = sdk.client()
    return Client(base.url, base.token, timeout=base.timeout)


class Run:
    """A tracked run. Use it as a context manager, or call ``finish()``."""

    def __init__(self, data: dict[str, Any], *, system_metrics: bool = True, last_steps: dict[str, int] | None = None):
        self.data = data
        self.id: str = data["id"]
        self._points: deque[dict[str, Any]] = deque()
        self._stop_checked: float | None = None
        self._stop_answer, self.stop_reason = False, ""
        self._steps: dict[str, int] = dict(last_steps or {})  # key -> last step (auto steps continue after it)
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
        """Merge tags into the run."""
        sdk.client().request("PATCH", f"/runs/{self.id}", json={"tags": tags})

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Queue one point; ``step`` defaults to one more than this key's previous step."""
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Queue several points at one step (default: each key's previous step + 1).

        What the server would refuse raises here at once (a bad key or step, a NaN or infinite
        value), so a queued batch is never refused for one bad point.
        """
        if step is not None:
            given = step
            try:
                step = -1 if isinstance(step, bool) else operator.index(step)  # int, numpy or torch integers
            except TypeError:
                step = -1
            if not 0 <= step < MAX_STEP:
                raise InvalidRequest(f"step must be a non-negative integer, got {given!r}")
        checked = []
        for key, value in metrics.items():
            if not isinstance(key, str) or not KEY.fullmatch(key):
                raise InvalidRequest(f"metric key {key!r} must be 1-250 letters, digits, spaces or _-./:")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InvalidRequest(f"metric {key!r}: value must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise InvalidRequest(f"metric {key!r}: value must be finite, got {value}")
            checked.append((key, value))
        now = time.time()
        with self._lock:
            for key, value in checked:
                s = step if step is not None else self._steps.get(key, -1) + 1
                self._steps[key] = max(s, self._steps.get(key, -1))
                if len(self._points) >= MAX_BUFFERED:  # the oldest point goes first (counted in ``dropped``)
                    self._points.popleft()
                    self.dropped += 1
                self._points.append({"key": key, "value": value, "step": s, "ts": now})
            full = len(self._points) >= BATCH
        if full:
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
                  meta: dict | None = None, *, registered_model: str | None = None,
                  signature: dict | None = None) -> dict[str, Any]:
        """Save a torch model as ``<name>.pt`` (kind=model): TorchScript when it traces (with
        ``example_input``) or scripts, else its state_dict. With an example input the signature (input and
        output shapes; feature names, task and classes from ``meta``) is recorded. With ``registered_model``
        the model also becomes a new version of that registered model (lineage from this run); the version
        is returned under ``"model_version"``."""
        try:
            import torch
        except ImportError:
            raise InvalidRequest("log_model saves torch models, and torch is not installed") from None
        if not isinstance(model, torch.nn.Module):
            raise InvalidRequest(f"log_model takes a torch.nn.Module, not {type(model).__name__}; "
                                 "save other models to a file and use log_artifact")

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
        meta = dict(meta or {})
        info = {"framework": "torch", "format": fmt, "torch": torch.__version__, **meta}
        if example_input is not None and hasattr(example_input, "shape"):
            info["input_shape"] = list(example_input.shape)
            info["input_dtype"] = str(example_input.dtype).replace("torch.", "")
            if signature is None:
                with torch.no_grad():
                    output = model(example_input)
                signature = _signature(example_input, output, meta)
        if signature is not None:
            info["signature"] = signature
        if registered_model is not None and fmt != "torchscript":
            raise InvalidRequest("only a traceable model can be registered: pass example_input")
        artifact = self._put_artifact(f"{name}.pt", buf.getvalue(), kind="model", meta=info)
        if registered_model is not None:
            artifact["model_version"] = sdk.client().post(
                f"/runs/{self.id}/models", {"name": registered_model, "artifact": f"{name}.pt"})["version"]
        return artifact

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

    def should_stop(self) -> bool:
        """True once this run's job should checkpoint and stop: cancelled, pruned by a tuning study's
        early stopping, or preempted. (The process also gets SIGTERM and a grace period.) Asks the
        server at most every 2 s; the reason is in ``stop_reason``."""
        now = time.monotonic()
        if self._stop_checked is None or now - self._stop_checked >= 2.0:
            self._stop_checked = now
            try:
                answer = sdk.client().get(f"/runs/{self.id}/control")
                self._stop_answer, self.stop_reason = bool(answer["stop"]), answer["reason"]
            except (ConnectionFailed, ServerError):
                pass  # unknown: keep the last answer; training goes on
        return self._stop_answer

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
                except OfficinaError as exc:
                    self.last_error = str(exc)
                    if isinstance(exc, (ConnectionFailed, ServerError)) or exc.status in (408, 429):
                        with self._lock:  # keep the points (the server ignores any it already has); retry
                            self._points.extendleft(reversed(batch))
                            self._in_flight = 0
                        time.sleep(backoff)
                        backoff = min(backoff * 2, 10.0)
                        continue
                    self.dropped += len(batch)  # refused for good (e.g. the run was deleted): say why
                finally:
                    with self._idle:
                        self._in_flight = 0
                        self._idle.notify_all()
            if self._stop.is_set() and not self._points:
                return

    def _system_loop(self) -> None:
        sampler = SystemSampler()
        while not self._stop.wait(SYSTEM_EVERY_S):
            try:
                points = sampler.sample()
                if points:
                    self.log_metrics(points)  # steps continue per key, also in a resumed job
            except Exception as exc:  # never let monitoring break a training run
                self.last_error = f"system metrics: {exc}"


class SystemSampler:
    """CPU, memory and GPU figures of this machine as ``system/…`` metrics.

    CPU and memory come from psutil when installed, else from /proc; GPUs from ``nvidia-smi``, else
    from torch.cuda when the program already uses it (never initialising CUDA itself). What is not
    available is left out.
    """

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:
            psutil = None
        self.psutil = psutil
        self._cpu: tuple[int, int] | None = None
        self._nvidia_smi = shutil.which("nvidia-smi")
        self.sample_cpu()  # the first reading only sets the baseline

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        cpu = self.sample_cpu()
        if cpu is not None:
            out["system/cpu_percent"] = cpu
        out.update(self.sample_memory())
        out.update(self.sample_gpus())
        return out

    def sample_cpu(self) -> float | None:
        """CPU use since the previous call, in percent of all cores."""
        if self.psutil is not None:
            return float(self.psutil.cpu_percent(None))
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle, total = fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])
        previous, self._cpu = self._cpu, (idle, total)
        if previous is None or total <= previous[1]:
            return None
        return 100.0 * (1 - (idle - previous[0]) / (total - previous[1]))

    def sample_memory(self) -> dict[str, float]:
        if self.psutil is not None:
            memory = self.psutil.virtual_memory()
            return {"system/memory_percent": float(memory.percent), "system/memory_used_mb": memory.used / 2**20}
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                info = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:2]}
            total, available = info["MemTotal"], info["MemAvailable"]
        except (OSError, ValueError, KeyError, IndexError):
            return {}
        return {"system/memory_percent": 100.0 * (total - available) / total,
                "system/memory_used_mb": (total - available) / 1024}

    def sample_gpus(self) -> dict[str, float]:
        if self._nvidia_smi:
            try:
                return parse_nvidia_smi(subprocess.run(
                    [self._nvidia_smi, "--query-gpu=index,utilization.gpu,memory.used,memory.total",
                     "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10, check=True).stdout)
            except (OSError, subprocess.SubprocessError, ValueError):
                self._nvidia_smi = None  # not usable here: stop asking
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return {}
        out: dict[str, float] = {}
        for i in range(torch.cuda.device_count()):
            out[f"system/gpu{i}_memory_used_mb"] = torch.cuda.memory_reserved(i) / 2**20
            try:
                out[f"system/gpu{i}_utilization"] = float(torch.cuda.utilization(i))
            except Exception:  # needs pynvml
                pass
        return out


def parse_nvidia_smi(text: str) -> dict[str, float]:
    """``system/gpu<i>_utilization``, ``_memory_used_mb`` and ``_memory_percent`` from
    ``nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total --format=csv,noheader,nounits``."""
    out: dict[str, float] = {}
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4:
            continue
        index, util, used, total = cells
        for name, value in (("utilization", util), ("memory_used_mb", used)):
            try:
                out[f"system/gpu{int(index)}_{name}"] = float(value)
            except ValueError:  # "[N/A]" on some boards
                pass
        try:
            out[f"system/gpu{int(index)}_memory_percent"] = 100.0 * float(used) / float(total)
        except (ValueError, ZeroDivisionError):
            pass
    return out


def init(project: str = "default", name: str | None = None, params: dict[str, Any] | None = None,
         tags: dict[str, Any] | None = None, team: str | None = None, *, system_metrics: bool = True) -> Run:
    """Start a run (or, inside a job, attach to the job's run) and make it the active one."""
    global _active
    run_id = os.environ.get("OFFICINA_RUN_ID")
    last_steps: dict[str, int] = {}
    if run_id:
        data = sdk.client().get(f"/runs/{run_id}")["run"]
        # A resumed attempt continues each key's automatic steps after what the run already holds.
        summary = sdk.client().get(f"/runs/{run_id}/metrics")["metrics"]
        last_steps = {key: int(s["step"]) for key, s in summary.items()}
    else:
        from officina.sdk.datasets import _team

        body = {"project": project, "params": params or {}, "tags": tags or {}}
        if name:
            body["name"] = name
        data = sdk.client().post(f"/teams/{quote(_team(team), safe='')}/runs", body)["run"]
    _active = Run(data, system_metrics=system_metrics, last_steps=last_steps)
    if run_id and params:
        _active.log_params(params)
    if run_id and tags:
        _active.set_tags(tags)
    return _active


def active_run() -> Run | None:
    """The run ``init`` made (None before, and after it finished)."""
    return _active


def get_run(run_id: str) -> dict[str, Any]:
    """A run's record (params, tags, status, last metric values)."""
    return sdk.client().get(f"/runs/{quote(run_id, safe='')}")["run"]


def history(run_id: str, key: str, max_points: int = 1000) -> list[list]:
    """``[step, value, ts]`` points of one metric (downsampled above ``max_points``)."""
    return sdk.client().get(f"/runs/{quote(run_id, safe='')}/metrics/{quote(key)}?max_points={max_points}")["points"]


def list_runs(team: str | None = None, *, project: str | None = None, sort: str | None = None) -> list[dict]:
    """A team's runs (newest first, or ``sort="metric:<key>:desc"``) with their last metric values."""
    from officina.sdk.datasets import _team

    query = "&".join(f"{k}={quote(v)}" for k, v in (("project", project), ("sort", sort)) if v)
    return sdk.client().get(f"/teams/{quote(_team(team), safe='')}/runs" + (f"?{query}" if query else ""))["runs"]


def _signature(example_input: Any, output: Any, meta: dict) -> dict:
    """Input/output schema from an example: batch dimension free, feature names, task and classes from meta."""
    features = meta.get("features")
    names = [str(f) for f in features] if isinstance(features, (list, tuple)) and len(example_input.shape) == 2 \
        and len(features) == example_input.shape[1] else None
    out_shape = list(output.shape) if hasattr(output, "shape") else []
    return {"inputs": {"dtype": str(example_input.dtype).replace("torch.", ""),
                       "shape": [-1, *list(example_input.shape)[1:]], "names": names},
            "outputs": {"dtype": str(getattr(output, "dtype", "float32")).replace("torch.", ""),
                        "shape": [-1, *out_shape[1:]]},
            "task": meta.get("task"), "classes": [_label(c) for c in meta.get("classes") or []] or None}


def _label(value: Any) -> Any:
    """A class label for JSON: whole-number floats (labels read as float64) become integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
