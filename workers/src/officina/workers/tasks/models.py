"""Model tasks on the ``cpu`` queue: evaluate a version, export it, score a dataset version.

Each claims its row through the model service (None: not queued any more, nothing to do), computes,
and finishes it; any error fails the row with a one-line reason, so none is left running.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from officina.platform.errors import OfficinaError
from officina.platform.tasks import MODEL_BATCH_PREDICT, MODEL_EVALUATE, MODEL_EXPORT
from officina.workers.app import app, services
from officina.workers.models.batch import run_batch
from officina.workers.models.evaluate import run_evaluation
from officina.workers.models.export import run_export

logger = logging.getLogger(__name__)


def reason(exc: BaseException) -> str:
    """A one-line reason to show: the message of an Officina error, else the exception's type and first line."""
    if isinstance(exc, OfficinaError):
        text = exc.message
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return " ".join(text.split())[:500]


def settle(what: str, compute: Callable[[], Any], finish: Callable[[Any], None],
           fail: Callable[[str], None]) -> str:
    """Compute and finish; on any error (finishing included) fail with a one-line reason. Returns the state."""
    try:
        finish(compute())
    except Exception as exc:
        logger.warning("%s failed: %s", what, reason(exc), exc_info=not isinstance(exc, OfficinaError))
        try:
            fail(reason(exc))
        except Exception:
            logger.exception("could not record that %s failed", what)
        return "failed"
    return "succeeded"


@app.task(name=MODEL_EVALUATE)
def evaluate(evaluation_id: str) -> str:
    """Run one queued evaluation; return its final state."""
    svc = services()
    task = svc.models.evaluation_task(evaluation_id)
    if task is None:
        return "skipped"
    return settle(f"evaluation {evaluation_id}", lambda: run_evaluation(svc, task),
                  lambda results: svc.models.finish_evaluation(evaluation_id, results),
                  lambda why: svc.models.fail_evaluation(evaluation_id, why))


@app.task(name=MODEL_EXPORT)
def export(version_id: str, fmt: str) -> str:
    """Make one queued export of a version; return its final state."""
    svc = services()
    task = svc.models.export_task(version_id, fmt)
    if task is None:
        return "skipped"
    return settle(f"{fmt} export of {version_id}", lambda: run_export(svc, task, fmt),
                  lambda made: svc.models.finish_export(version_id, fmt, *made),
                  lambda why: svc.models.fail_export(version_id, fmt, why))


@app.task(name=MODEL_BATCH_PREDICT)
def batch_predict(batch_id: str) -> str:
    """Run one queued batch prediction; return its final state."""
    svc = services()
    task = svc.models.batch_task(batch_id)
    if task is None:
        return "skipped"
    return settle(f"batch prediction {batch_id}", lambda: run_batch(svc, task),
                  lambda done: svc.models.finish_batch(batch_id, *done),
                  lambda why: svc.models.fail_batch(batch_id, why))
