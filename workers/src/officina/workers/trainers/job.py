"""Running a trainer as a job's entrypoint: read the ``OFFICINA_*`` environment, open the run and the
dataset version through the SDK, train, finish the run (see docs/jobs-api.md)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from officina import sdk
from officina.workers.trainers.common import StopRequested, Tracker, TrainerError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEnv:
    """What a job gives its entrypoint through ``OFFICINA_*`` variables (see docs/jobs-api.md)."""

    params: dict[str, Any]
    datasets: dict[str, str]
    project: str
    team: str | None
    run_id: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> JobEnv:
        """Read the job's environment (default: ``os.environ``).

        Raises:
            TrainerError: OFFICINA_PARAMS or OFFICINA_DATASETS is not a JSON object.
        """
        environ = os.environ if environ is None else environ
        loaded = {}
        for key in ("OFFICINA_PARAMS", "OFFICINA_DATASETS"):
            try:
                loaded[key] = json.loads(environ.get(key) or "{}")
            except json.JSONDecodeError as exc:
                raise TrainerError(f"{key} is not valid JSON: {exc}") from None
            if not isinstance(loaded[key], dict):
                raise TrainerError(f"{key} must be a JSON object")
        datasets = {str(k): str(v) for k, v in loaded["OFFICINA_DATASETS"].items()}
        return cls(params=loaded["OFFICINA_PARAMS"], datasets=datasets,
                   project=environ.get("OFFICINA_PROJECT") or "default", team=environ.get("OFFICINA_TEAM") or None,
                   run_id=environ.get("OFFICINA_RUN_ID") or None)

    def dataset_ref(self) -> tuple[str, str]:
        """``(name, version)`` of the dataset to train on: the one called "train", else the only one.

        Raises:
            TrainerError: no dataset, or several and none called "train".
        """
        if "train" in self.datasets:
            ref = self.datasets["train"]
        elif len(self.datasets) == 1:
            ref = next(iter(self.datasets.values()))
        else:
            raise TrainerError("give the trainer one dataset (or several with one called 'train'), "
                               f"not {len(self.datasets)}: {', '.join(self.datasets) or 'none'}")
        name, _, version = ref.rpartition(":") if ":" in ref else (ref, "", "latest")
        return name, version or "latest"


_terminated = threading.Event()  # set by SIGTERM (see main)


class SdkTracker:
    """A :class:`Tracker` over an SDK run and ``sdk.checkpoint``; the summary goes to ``summary.json`` in
    the job's working directory and its metrics to the log."""

    def __init__(self, run: Any, summary_path: str = "summary.json", register_as: str | None = None):
        self.run, self.summary_path, self.register_as = run, summary_path, register_as

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.log_params(params)

    def should_stop(self) -> bool:
        """Pruned, cancelled or preempted: SIGTERM arrived, or the server says so (``run.should_stop()``)."""
        return _terminated.is_set() or self.run.should_stop()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log_metrics(metrics, step=step)

    def save_checkpoint(self, data: bytes, step: int) -> None:
        sdk.checkpoint.save(data, step)

    def load_checkpoint(self) -> tuple[int, Any] | None:
        return sdk.checkpoint.load()

    def log_model(self, model: nn.Module, example_input: torch.Tensor, meta: dict[str, Any] | None = None) -> None:
        logged = self.run.log_model(model, name="model", example_input=example_input, meta=meta,
                                    registered_model=self.register_as)
        if "model_version" in logged:
            version = logged["model_version"]
            print(f"officina: registered model {version['model']} v{version['version']}", flush=True)

    def log_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, indent=2, default=str)
        with open(self.summary_path, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        print(f"summary: {json.dumps(summary['metrics'])}", flush=True)


def run_job(trainer: str, train: Callable[[Any, dict[str, Any], Tracker], dict[str, Any]],
            environ: Mapping[str, str] | None = None) -> int:
    """Run one trainer as a job's entrypoint: open the run and dataset, train, finish the run; return the
    exit code (2, with the message on stderr, for a :class:`TrainerError`)."""
    try:
        env = JobEnv.from_environ(environ)
        name, version_ref = env.dataset_ref()
        run = sdk.init(env.project)
        version = sdk.datasets.get(name, version_ref, team=env.team)
        logger.info("%s trainer on %s:%s (%s)", trainer, name, version.number, version.kind)
        register_as = env.params.get("register_model")
        train(version, env.params, SdkTracker(run, register_as=register_as if isinstance(register_as, str) else None))
        run.finish()
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except StopRequested as exc:
        print(f"officina: {exc}", flush=True)
        run.finish("killed")
    return 0


def main(trainer: str, train: Callable[[Any, dict[str, Any], Tracker], dict[str, Any]]) -> None:
    """A trainer module's ``main()``: log to stdout (the job's log) and exit with :func:`run_job`'s code.
    SIGTERM (pruned, cancelled, preempted) ends training after the current epoch, with a checkpoint."""
    signal.signal(signal.SIGTERM, lambda *_: _terminated.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    sys.exit(run_job(trainer, train))
