"""Hyper-parameter tuning: ``sdk.tune(...)`` runs a study whose trials are jobs on the fleet.

    from officina import sdk
    from officina.sdk.tuning import loguniform, choice

    study = sdk.tune(trainer="tabular", dataset="breast_cancer", metric="val_acc", mode="max",
                     space={"lr": loguniform(1e-4, 1e-1), "hidden": choice([32, 64, 128])},
                     trials=20, parallel=4, early_stopping="asha", budget="2 GPU-hours")
    study.wait()
    study.best          # {"number", "value", "params", "job_id", "run_id"}

A trial reads its parameters like any job (``OFFICINA_PARAMS``), logs its metric with
``run.log_metric`` every epoch (the step is what early stopping compares), and should stop when
``run.should_stop()`` turns true (it also gets SIGTERM and a grace period).
"""
from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk.errors import InvalidRequest

ENDED = ("succeeded", "failed", "stopped")


def uniform(low: float, high: float, step: float | None = None) -> dict[str, Any]:
    """A float between ``low`` and ``high`` (on a grid of ``step`` when given)."""
    return {"type": "float", "low": low, "high": high, "log": False, "step": step}


def loguniform(low: float, high: float) -> dict[str, Any]:
    """A float between ``low`` and ``high``, uniform in log space (learning rates, weight decay)."""
    return {"type": "float", "low": low, "high": high, "log": True}


def randint(low: int, high: int, step: int = 1, log: bool = False) -> dict[str, Any]:
    """A whole number from ``low`` to ``high`` inclusive."""
    return {"type": "int", "low": low, "high": high, "log": log, "step": None if log else step}


def choice(choices: list) -> dict[str, Any]:
    """One of ``choices`` (strings, numbers, booleans)."""
    return {"type": "choice", "choices": [*choices]}


class Study:
    """A study on the server. ``refresh()`` re-reads it; ``wait()`` blocks until it ends."""

    def __init__(self, data: dict[str, Any], trials: list[dict[str, Any]] | None = None):
        self.data, self._trials = data, trials

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def state(self) -> str:
        return self.data["state"]

    @property
    def best(self) -> dict[str, Any] | None:
        """The best complete trial: ``{"number", "value", "params", "job_id", "run_id"}`` (None before one ends)."""
        return self.data.get("best")

    @property
    def trials(self) -> list[dict[str, Any]]:
        """Trials: number, state (running, pruning, complete, pruned, failed), params, value, job_id, reason."""
        if self._trials is None:
            self.refresh()
        return self._trials or []

    def refresh(self) -> "Study":
        body = sdk.client().get(f"/studies/{quote(self.id, safe='')}")
        self.data, self._trials = body["study"], body["trials"]
        return self

    def wait(self, timeout: float | None = None, poll: float = 2.0) -> "Study":
        """Block until the study succeeds, fails or is stopped (raise TimeoutError after ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().state not in ENDED:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"study {self.data['name']} still {self.state} after {timeout} s")
            time.sleep(poll)
        return self

    def stop(self) -> "Study":
        self.data = sdk.client().post(f"/studies/{quote(self.id, safe='')}/stop", {})["study"]
        return self

    def extend(self, trials: int) -> "Study":
        """Run ``trials`` more trials (also resumes a study that ended)."""
        self.data = sdk.client().post(f"/studies/{quote(self.id, safe='')}/extend", {"trials": trials})["study"]
        return self

    def importance(self) -> dict[str, float]:
        """Parameter importances over the complete trials (empty below 3 trials)."""
        return sdk.client().get(f"/studies/{quote(self.id, safe='')}/importance")["importance"]

    def __repr__(self) -> str:
        return f"Study({self.data['name']!r}, {self.state}, best={self.best})"


def tune(entrypoint: str | None = None, *, space: dict[str, dict[str, Any]], metric: str, mode: str = "max",
         trials: int = 20, parallel: int = 1, algorithm: str = "tpe", early_stopping: str | None = None,
         budget: str | float | None = None, name: str | None = None, seed: int = 0, min_resource: int = 1,
         code_dir: str | os.PathLike = ".", params: dict | None = None, datasets: dict[str, str] | None = None,
         trainer: str | None = None, dataset: str | None = None, gpus: int = 0, cpus: float = 1,
         memory: str = "4Gi", priority: str = "normal", timeout: str | int = "2h", max_retries: int = 1,
         project: str | None = None, team: str | None = None) -> Study:
    """Start a study: each trial runs ``entrypoint`` (or ``trainer``) as a job with parameters drawn
    from ``space``, at most ``parallel`` at once; Optuna's ``algorithm`` (tpe, random, grid, cmaes)
    picks them, ``early_stopping`` (asha, hyperband, median) stops bad ones, and ``budget`` (e.g.
    ``"2 GPU-hours"``) caps the compute. Returns the Study (it runs on the server; ``.wait()``)."""
    from officina.sdk.datasets import _team
    from officina.sdk.jobs import job_body

    team = _team(team)
    name = name or f"study-{time.strftime('%Y%m%d-%H%M%S')}"
    if not isinstance(space, dict) or not space:
        raise InvalidRequest("space must be a non-empty dict of parameter → distribution (loguniform, choice …)")
    job = job_body(entrypoint, code_dir, params, datasets, gpus, cpus, memory, None, priority, None, max_retries,
                   timeout, trainer=trainer, dataset=dataset, project=project or f"tuning-{name}", team=team)
    body = {"name": name, "job": job, "space": space, "metric": metric, "mode": mode, "trials": trials,
            "parallel": parallel, "algorithm": algorithm, "early_stopping": early_stopping, "budget": budget,
            "seed": seed, "min_resource": min_resource}
    return Study(sdk.client().post(f"/teams/{quote(team, safe='')}/studies", body)["study"])


def get(study_id: str) -> Study:
    return Study({"id": study_id}).refresh()


def list(team: str | None = None) -> list[Study]:  # noqa: A001 - reads as sdk.tuning.list()
    from officina.sdk.datasets import _team

    return [Study(s) for s in sdk.client().get(f"/teams/{quote(_team(team), safe='')}/studies")["studies"]]
