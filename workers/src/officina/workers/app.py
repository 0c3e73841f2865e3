"""The Celery app of the worker fleet: ``celery -A officina.workers.app worker -Q cpu,gpu,io``.

Configuration is shared with senders (``officina.platform.tasks``); this module only adds the
task modules and opens per-process services after fork.
"""
from __future__ import annotations

import logging

from celery.signals import worker_process_init, worker_process_shutdown

from officina.platform.services import Services
from officina.platform.settings import Settings
from officina.platform.tasks import DATASET_GC, GC_EVERY_S, JOB_SWEEP, make_celery

logger = logging.getLogger(__name__)

TASK_MODULES = ("officina.workers.tasks.system", "officina.workers.tasks.datasets", "officina.workers.tasks.jobs")

settings = Settings()
app = make_celery(settings, include=TASK_MODULES)
app.conf.beat_schedule = {
    "dataset-gc": {"task": DATASET_GC, "schedule": GC_EVERY_S, "options": {"queue": "io"}},
    "job-sweep": {"task": JOB_SWEEP, "schedule": settings.job_sweep_s, "options": {"queue": "io", "expires": 60}},
}

_services: Services | None = None


def services() -> Services:
    """This worker process's services, opened on first use (after fork, never before)."""
    global _services
    if _services is None:
        _services = Services.open(settings, pool_size=4, celery=app)
    return _services


@worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    global _services
    _services = None


@worker_process_shutdown.connect
def _close(**_: object) -> None:
    if _services is not None:
        _services.close()
