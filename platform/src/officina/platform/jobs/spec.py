"""Checking what ``sdk.submit`` sends: entrypoint or trainer, params, datasets, resources, limits."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from officina.platform.datasets.archive import validate_relpath
from officina.platform.errors import Invalid
from officina.platform.storage.content import check_sha

TRAINERS = ("tabular", "image", "text")
PRIORITIES = {"low": -10, "normal": 0, "high": 10}
QUEUES = ("cpu", "gpu")
MAX_TIMEOUT_S = 14 * 24 * 3600
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?B?\s*$")
_MEMORY_MB = {None: 1 / 2**20, "K": 1e3 / 2**20, "Ki": 1 / 1024, "M": 1e6 / 2**20, "Mi": 1, "G": 1e9 / 2**20,
              "Gi": 1024, "T": 1e12 / 2**20, "Ti": 2**20}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
FIELDS = ("entrypoint", "code", "trainer", "params", "datasets", "project", "name", "gpus", "cpus", "memory",
          "queue", "priority", "max_retries", "timeout", "git", "env")


@dataclass(frozen=True)
class JobSpec:
    """A checked submission."""

    project: str
    name: str
    entrypoint: str | None
    code: str | None
    trainer: str | None
    params: dict[str, Any]
    datasets: dict[str, str]
    gpus: int
    cpus: float
    memory_mb: int
    queue: str
    priority: int
    max_retries: int
    timeout_s: int
    git: dict[str, Any] | None
    env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_duration(value: Any, field_name: str = "timeout") -> int:
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"2h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise Invalid(f"{field_name} must be seconds or a duration like '2h'", field=field_name)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    else:
        raise Invalid(f"{field_name} must be seconds or a duration like '2h', not {value!r}", field=field_name)
    if not math.isfinite(seconds) or not 1 <= seconds <= MAX_TIMEOUT_S:
        raise Invalid(f"{field_name} must be between 1 s and 14 days", field=field_name)
    return int(seconds)


def parse_memory(value: Any) -> int:
    """MiB from ``"4Gi"``, ``"512Mi"``, ``"2G"`` or a number of bytes."""
    if isinstance(value, bool):
        raise Invalid("memory must look like '4Gi' or '512Mi'", field="memory")
    if isinstance(value, (int, float)):
        mb = float(value) / 2**20
    elif isinstance(value, str) and (m := _MEMORY.match(value)):
        mb = float(m.group(1)) * _MEMORY_MB[m.group(2)]
    else:
        raise Invalid(f"memory must look like '4Gi' or '512Mi', not {value!r}", field="memory")
    if not math.isfinite(mb) or not 1 <= mb <= 16 * 2**20:
        raise Invalid("memory must be between 1 MiB and 16 TiB", field="memory")
    return int(math.ceil(mb))


def _int(spec: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{name} must be an integer between {lo} and {hi}", field=name)
    return value


def parse_dataset_ref(value: Any, label: str) -> tuple[str, str]:
    """``"digits:3"`` → ("digits", "3"); ``"digits"`` → ("digits", "latest")."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"dataset {label!r} must be 'name' or 'name:version'", field="datasets")
    name, _, ref = value.partition(":")
    return name.strip(), (ref.strip() or "latest")


def parse_spec(spec: Any) -> JobSpec:
    """Check a submission; datasets stay as given (the service resolves them to version numbers).

    Raises:
        Invalid: a missing entrypoint, unknown field or value out of range, naming the field.
    """
    if not isinstance(spec, dict):
        raise Invalid("a job is a JSON object", field="body")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
    trainer, entrypoint, code = spec.get("trainer"), spec.get("entrypoint"), spec.get("code")
    if trainer is not None:
        if trainer not in TRAINERS:
            raise Invalid(f"trainer must be one of {', '.join(TRAINERS)}", field="trainer")
        if entrypoint is not None or code is not None:
            raise Invalid("give either a trainer or an entrypoint with code, not both", field="trainer")
    else:
        if not entrypoint:
            raise Invalid("entrypoint is required (the script to run, e.g. train.py), or name a trainer",
                          field="entrypoint")
        entrypoint = validate_relpath(entrypoint, field_name="entrypoint")
        if not entrypoint.endswith(".py"):
            raise Invalid("entrypoint must be a .py file inside the code directory", field="entrypoint")
        if code is None:
            raise Invalid("code is required with an entrypoint: the sha256 of an uploaded code bundle",
                          field="code")
        code = check_sha(code)
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise Invalid("params must be a JSON object", field="params")
    try:
        if len(json.dumps(params, allow_nan=False)) > 256 * 1024:
            raise Invalid("params must be at most 256 KiB of JSON", field="params")
    except ValueError:
        raise Invalid("params must be JSON (no NaN or Infinity)", field="params") from None
    datasets = spec.get("datasets") or {}
    if not isinstance(datasets, dict) or len(datasets) > 32:
        raise Invalid("datasets maps names to 'dataset:version' (at most 32)", field="datasets")
    for key, value in datasets.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key):
            raise Invalid(f"dataset key {key!r} must be an identifier like 'train'", field="datasets")
        parse_dataset_ref(value, key)
    project = spec.get("project") or "default"
    name = spec.get("name") or (trainer and f"{trainer}-trainer") or entrypoint.rsplit("/", 1)[-1][:-3]
    for label, value in (("project", project), ("name", name)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise Invalid(f"{label} must be 1-100 letters, digits, spaces, '.', '_' or '-'", field=label)
    gpus = _int(spec, "gpus", 0, 0, 64)
    cpus = spec.get("cpus", 1)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 < cpus <= 512:
        raise Invalid("cpus must be a number between 0 and 512", field="cpus")
    queue = spec.get("queue") or ("gpu" if gpus else "cpu")
    if queue not in QUEUES:
        raise Invalid(f"queue must be one of {', '.join(QUEUES)}", field="queue")
    if gpus and queue != "gpu":
        raise Invalid("a job that needs GPUs runs on the gpu queue", field="queue")
    priority = spec.get("priority", "normal")
    if priority not in PRIORITIES:
        raise Invalid(f"priority must be one of {', '.join(PRIORITIES)}", field="priority")
    git = spec.get("git")
    if git is not None and (not isinstance(git, dict) or len(json.dumps(git)) > 1024 * 1024):
        raise Invalid("git must be an object of at most 1 MiB (commit, dirty, diff)", field="git")
    env = spec.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", k)
                                            and not k.startswith("OFFICINA_") and isinstance(v, str)
                                            for k, v in env.items()):
        raise Invalid("env maps UPPER_CASE names (not OFFICINA_*) to strings", field="env")
    return JobSpec(project=project, name=name, entrypoint=entrypoint, code=code, trainer=trainer, params=params,
                   datasets=dict(datasets), gpus=gpus, cpus=float(cpus),
                   memory_mb=parse_memory(spec.get("memory", "4Gi")), queue=queue, priority=PRIORITIES[priority],
                   max_retries=_int(spec, "max_retries", 2, 0, 20),
                   timeout_s=parse_duration(spec.get("timeout", "2h")), git=git, env=env)
