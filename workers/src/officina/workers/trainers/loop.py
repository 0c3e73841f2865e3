"""The training loop every built-in trainer runs: :func:`fit` over a :class:`Problem`.

It logs metrics each epoch, checkpoints every ``checkpoint_every`` epochs (model, optimizer, epoch and
every RNG state; serialized and saved on a background thread) and, when the tracker already holds a
checkpoint, resumes after its epoch, so a retried job goes on where the lost attempt stopped and logs
metrics only for the epochs it runs. At the end it logs test metrics, the model and a summary.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from officina.workers.trainers.common import StopRequested, Tracker, TrainerError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class Problem:
    """What :func:`fit` trains: a model, inputs and targets per split, and how to read them.

    ``inputs``/``targets`` map "train"/"val"/"test" to tensors (any device; ``fit`` moves them).
    ``prepare`` turns a batch of stored inputs into model input (e.g. uint8 pixels to floats) and
    ``augment`` changes training batches only. Regression models predict in label units; the loss
    divides errors by ``target_scale`` so that it reads like a standardized MSE. ``meta`` describes the
    model (trainer, architecture, classes) and must match a checkpoint's for it to be resumed.
    """

    model: nn.Module
    inputs: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    task: str  # "classification" or "regression"
    meta: dict[str, Any]
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    target_scale: float = 1.0


def _loss(problem: Problem, output: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if problem.task == "classification":
        return F.cross_entropy(output, target, reduction=reduction)
    return F.mse_loss(output.reshape(-1) / problem.target_scale, target / problem.target_scale, reduction=reduction)


@torch.no_grad()
def evaluate(problem: Problem, split: str, batch_size: int) -> dict[str, float]:
    """Loss and accuracy (classification) or RMSE in label units (regression) on one split."""
    model, x, y = problem.model, problem.inputs[split], problem.targets[split]
    if len(y) == 0:
        return {}
    model.eval()
    total_loss, hits, squared = 0.0, 0, 0.0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model(problem.prepare(xb) if problem.prepare else xb)
        total_loss += float(_loss(problem, out, yb, reduction="sum"))
        if problem.task == "classification":
            hits += int((out.argmax(1) == yb).sum())
        else:
            squared += float(((out.reshape(-1) - yb) ** 2).sum())
    n = len(y)
    result = {f"{split}_loss": total_loss / n}
    if problem.task == "classification":
        result[f"{split}_acc"] = hits / n
    else:
        result[f"{split}_rmse"] = math.sqrt(squared / n)
    return result


def _rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), pos, has_gauss, cached], "python": random.getstate()}


def _set_rng_state(state: Mapping[str, Any], shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    shuffle.set_state(state["shuffle"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _snapshot(value: Any) -> Any:
    """A copy of a (nested) state dict whose tensors are detached CPU copies, safe from later training steps."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v) for v in value)
    return value


class _Checkpointer:
    """Writes checkpoints on one background thread so training goes on while the last one is serialized
    and uploaded; one is in flight at most, and its error surfaces at the next save or at :meth:`wait`."""

    def __init__(self, tracker: Tracker):
        self.tracker, self._pool, self._pending = tracker, ThreadPoolExecutor(1, "checkpoint"), None

    def save(self, problem: Problem, optimizer: torch.optim.Optimizer, epoch: int, shuffle: torch.Generator) -> None:
        self.wait()
        state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "meta": problem.meta,
                 "model": _snapshot(problem.model.state_dict()), "optimizer": _snapshot(optimizer.state_dict()),
                 "rng": _rng_state(shuffle)}
        self._pending = self._pool.submit(self._write, state, epoch)

    def _write(self, state: dict[str, Any], step: int) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.tracker.save_checkpoint(buffer.getvalue(), step)

    def wait(self) -> None:
        """Block until the checkpoint in flight is saved (raising its error, if any)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _resume(problem: Problem, optimizer: torch.optim.Optimizer, tracker: Tracker, shuffle: torch.Generator,
            device: torch.device) -> int:
    """Restore the tracker's latest checkpoint, if any; return the epoch it was taken after (0 if none).

    Raises:
        TrainerError: the checkpoint is not one of this trainer's or is for another model.
    """
    found = tracker.load_checkpoint()
    if found is None:
        return 0
    step, state = found
    if isinstance(state, (bytes, bytearray, memoryview)):
        state = torch.load(io.BytesIO(bytes(state)), map_location=device, weights_only=True)
    if not isinstance(state, Mapping) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainerError(f"the run's checkpoint at step {step} was not written by an Officina trainer")
    if state["meta"] != problem.meta:
        changed = sorted(k for k in set(state["meta"]) | set(problem.meta)
                         if state["meta"].get(k) != problem.meta.get(k))
        raise TrainerError(f"the run's checkpoint at step {step} is for another model ({', '.join(changed)} "
                           "differ); start a new run to train this one")
    problem.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"], shuffle)
    logger.info("resumed from the checkpoint after epoch %d", state["epoch"])
    return int(state["epoch"])


def _lr_at(params: Mapping[str, Any], epoch: int) -> float:
    """Cosine decay from ``lr`` over ``epochs`` (a function of the epoch alone, so nothing to checkpoint)."""
    return params["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / params["epochs"]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(problem: Problem, params: Mapping[str, Any], tracker: Tracker, device: torch.device) -> dict[str, Any]:
    """Train ``problem.model`` for ``params["epochs"]`` epochs (resuming from the tracker's checkpoint), log
    metrics per epoch, test metrics and the model at the end; return the summary (also logged).

    Raises:
        TrainerError: the tracker's checkpoint cannot be resumed here, or the loss stopped being finite.
    """
    model = problem.model.to(device)
    problem.inputs = {k: v.to(device) for k, v in problem.inputs.items()}
    problem.targets = {k: v.to(device) for k, v in problem.targets.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    shuffle = torch.Generator().manual_seed(params["seed"])
    start = _resume(problem, optimizer, tracker, shuffle, device)
    checkpointer = _Checkpointer(tracker)
    try:
        return _train(problem, params, tracker, device, optimizer, shuffle, start, checkpointer)
    finally:
        checkpointer.close()


def _train(problem: Problem, params: Mapping[str, Any], tracker: Tracker, device: torch.device,
           optimizer: torch.optim.Optimizer, shuffle: torch.Generator, start: int,
           checkpointer: _Checkpointer) -> dict[str, Any]:
    model = problem.model
    tracker.log_params(dict(params))
    epochs, batch_size, every = params["epochs"], params["batch_size"], params["checkpoint_every"]
    x, y = problem.inputs["train"], problem.targets["train"]
    n = len(y)
    train_seconds = 0.0
    for epoch in range(start + 1, epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(params, epoch)
        model.train()
        _sync(device)
        began = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        total = torch.zeros((), device=device)
        for first in range(0, n, batch_size):
            index = order[first:first + batch_size]
            xb = x[index]
            xb = problem.prepare(xb) if problem.prepare else xb
            if problem.augment:
                xb = problem.augment(xb)
            loss = _loss(problem, model(xb), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(index)
        _sync(device)
        seconds = time.perf_counter() - began
        train_seconds += seconds
        last = {"train_loss": float(total) / n, "samples_per_s": n / seconds, "lr": _lr_at(params, epoch),
                **evaluate(problem, "val", max(batch_size, 1024))}
        if not all(math.isfinite(v) for v in last.values()):
            raise TrainerError(f"training diverged in epoch {epoch} (train_loss {last['train_loss']}); "
                               "try a lower lr")
        tracker.log_metrics(last, step=epoch)
        logger.info("epoch %d/%d %s", epoch, epochs, " ".join(f"{k}={v:.4g}" for k, v in last.items()))
        if epoch == epochs or (every and epoch % every == 0):
            checkpointer.save(problem, optimizer, epoch, shuffle)
        should_stop = getattr(tracker, "should_stop", None)  # trackers of jobs can be told to stop
        if epoch < epochs and should_stop is not None and should_stop():
            if not (every and epoch % every == 0):
                checkpointer.save(problem, optimizer, epoch, shuffle)
            checkpointer.wait()
            raise StopRequested(f"stopped after epoch {epoch} of {epochs} as asked; checkpoint saved")
    final = {**evaluate(problem, "val", max(batch_size, 1024)), **evaluate(problem, "test", max(batch_size, 1024))}
    tracker.log_metrics({k: v for k, v in final.items() if k.startswith("test_")}, step=epochs)
    served = copy.deepcopy(model).cpu().eval()
    example = problem.inputs["test" if len(problem.targets["test"]) >= 2 else "train"][:2].cpu()
    example = problem.prepare(example) if problem.prepare else example
    checkpointer.wait()  # the last checkpoint is stored before the model and summary say the run is done
    tracker.log_model(served, example, problem.meta)
    summary = {"trainer": problem.meta.get("trainer"), "task": problem.task, "device": str(device),
               "epochs": epochs, "resumed_after_epoch": start, "epochs_run": max(0, epochs - start),
               "sizes": {k: len(v) for k, v in problem.targets.items()}, "train_seconds": round(train_seconds, 3),
               "samples_per_s": round((epochs - start) * n / train_seconds, 1) if train_seconds else None,
               "metrics": final, "params": dict(params), "model": problem.meta}
    tracker.log_summary(summary)
    return summary
