"""What the built-in trainers share: their error, the tracker they report to, params, splits, seeding.

Each trainer's core is a plain function over in-memory arrays and a :class:`Tracker`: ``main()``
backs it with the SDK (``job.SdkTracker``), tests and benchmarks with :class:`MemoryTracker`. The
training loop is in ``loop``, the job's entrypoint plumbing in ``job``.
"""
from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# name → (type, default, minimum); a trainer overrides defaults and adds its own names.
COMMON_PARAMS: dict[str, tuple[type, Any, float | None]] = {
    "epochs": (int, 20, 1), "lr": (float, 1e-3, 1e-9), "batch_size": (int, 64, 1), "hidden": (int, 128, 1),
    "seed": (int, 0, None), "checkpoint_every": (int, 1, 0), "weight_decay": (float, 1e-4, 0.0),
    "label_column": (str, None, None), "device": (str, None, None), "threads": (int, None, 1),
    "register_model": (str, None, None),  # also register the trained model under this name
}


class TrainerError(ValueError):
    """A problem with the trainer's input (params, dataset, checkpoint) whose message is for the user."""


class StopRequested(Exception):
    """Training stopped early because the platform asked (pruned, cancelled or preempted); a checkpoint
    of the last epoch is stored, so a resumed attempt continues from it."""


class Tracker(Protocol):
    """Where a trainer reports: the SDK's run in a job, a :class:`MemoryTracker` in tests."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def save_checkpoint(self, data: bytes, step: int) -> None: ...
    def load_checkpoint(self) -> tuple[int, Any] | None: ...
    def log_model(self, model: nn.Module, example_input: torch.Tensor, meta: dict[str, Any] | None = None) -> None: ...
    def log_summary(self, summary: dict[str, Any]) -> None: ...


@dataclass
class MemoryTracker:
    """A tracker that keeps everything in memory; pass ``checkpoints`` of an earlier one to resume."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    models: list[tuple[nn.Module, torch.Tensor]] = field(default_factory=list)
    summary: dict[str, Any] | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def save_checkpoint(self, data: bytes, step: int) -> None:
        self.checkpoints[step] = data

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        if not self.checkpoints:
            return None
        step = max(self.checkpoints)
        return step, self.checkpoints[step]

    def log_model(self, model: nn.Module, example_input: torch.Tensor, meta: dict[str, Any] | None = None) -> None:
        self.models.append((model, example_input))

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.summary = summary

    def history(self, key: str) -> list[tuple[int, float]]:
        """``[(step, value)]`` of one metric, in logging order."""
        return [(step, m[key]) for step, m in self.metrics if key in m]


# -- params, splits, seeding, device -----------------------------------------------------------------

def resolve_params(given: Mapping[str, Any] | None, spec: Mapping[str, tuple[type, Any, float | None]]) -> dict:
    """``given`` checked against ``spec`` and completed with its defaults; unknown names are ignored.

    Raises:
        TrainerError: a value has the wrong type or is out of range.
    """
    given = dict(given or {})
    for name in sorted(set(given) - set(spec)):
        logger.warning("ignoring unknown param %s (known: %s)", name, ", ".join(sorted(spec)))
    params: dict[str, Any] = {}
    for name, (kind, default, minimum) in spec.items():
        value = given.get(name, default)
        if value is not None:
            value = _coerce(name, kind, value)
            if minimum is not None and value < minimum:
                raise TrainerError(f"param {name} must be at least {minimum}, not {value}")
        params[name] = value
    return params


def _coerce(name: str, kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (ints from whole numbers, bools from true/false/1/0, finite floats)."""
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind is float:
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise TrainerError(f"param {name} must be {'a whole number' if kind is int else kind.__name__}, "
                           f"not {value!r}") from None


@dataclass(frozen=True)
class Split:
    """Row indices of the train, val and test parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _divide(indices: np.ndarray, fractions: Sequence[float], rng: np.random.Generator,
            strata: np.ndarray | None) -> list[np.ndarray]:
    """Shuffle ``indices`` and cut them by ``fractions``; with ``strata``, each stratum is spread evenly
    over the order first, so every part holds its share of each stratum (within one item)."""
    order = rng.permutation(indices)
    if strata is not None and len(order):
        keys = np.empty(len(order))
        groups = strata[order]
        for value in np.unique(groups):
            where = np.flatnonzero(groups == value)
            keys[where] = (np.arange(len(where)) + 0.5) / len(where)
        order = order[np.argsort(keys, kind="stable")]
    counts = [int(round(len(order) * f)) for f in fractions[1:]]
    cuts = np.cumsum([len(order) - sum(counts)] + counts)[:-1]
    return [np.sort(part).astype(np.int64) for part in np.split(order, cuts)]


def make_split(n: int, seed: int, strata: np.ndarray | None = None,
               recorded: Mapping[str, Sequence[int]] | None = None) -> Split:
    """The recorded split when given (a missing val or test part is cut from train), else a seeded 80/10/10
    split of ``n`` rows, stratified by ``strata`` (class indices) when given."""
    rng = np.random.default_rng(seed)
    if recorded is None:
        return Split(*_divide(np.arange(n), (0.8, 0.1, 0.1), rng, strata))
    known = {name: np.asarray(sorted(int(i) for i in recorded.get(name, ())), dtype=np.int64) for name in SPLITS}
    if len(known["train"]) == 0:
        raise TrainerError(f"the dataset's split has no train part (it has: {', '.join(recorded) or 'nothing'})")
    for name in ("val", "test"):
        if len(known[name]) == 0:
            known["train"], known[name] = _divide(known["train"], (0.9, 0.1), rng, strata)
    return Split(known["train"], known["val"], known["test"])


def kept_rows_split(assignment: Mapping[str, Sequence[int]], keep: np.ndarray) -> dict[str, list[int]]:
    """A recorded split of a table's row numbers, renumbered for the rows ``keep`` (a mask) selects."""
    position = np.full(len(keep), -1, dtype=np.int64)
    position[np.flatnonzero(keep)] = np.arange(int(np.count_nonzero(keep)))
    return {name: [int(position[int(i)]) for i in items if 0 <= int(i) < len(keep) and position[int(i)] >= 0]
            for name, items in assignment.items()}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every CUDA device included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def setup(params: Mapping[str, Any]) -> torch.device:
    """Apply the ``threads`` param, seed everything with ``seed``; return the device to train on: the
    ``device`` param, else CUDA when available, else the CPU (call before building the model)."""
    if params.get("threads"):
        torch.set_num_threads(params["threads"])
    seed_everything(params["seed"])
    if params.get("device"):
        return torch.device(params["device"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
