"""The Celery app of the worker fleet: ``celery -A officina.workers.app worker -Q cpu,gpu,io``.

Configuration is shared with senders (``officina.platform.tasks``); this module only adds the
task modules and opens per-process services after fork.
"""
from __future__ import annotations

import logging

import psycopg
from celery.signals import (celeryd_after_setup, worker_process_init, worker_process_shutdown, worker_ready,
                            worker_shutdown)

from officina.platform.fleet.service import FleetService
from officina.platform.scheduler.service import worker_queue
from officina.platform.services import Services
from officina.platform.settings import Settings, with_secrets
from officina.platform.tasks import DATASET_GC, GC_EVERY_S, JOB_SWEEP, TUNING_DRIVE, make_celery

logger = logging.getLogger(__name__)

TASK_MODULES = ("officina.workers.tasks.system", "officina.workers.tasks.datasets", "officina.workers.tasks.jobs",
                "officina.workers.tasks.tuning", "officina.workers.tasks.models")

settings = Settings()
app = make_celery(settings, include=TASK_MODULES)
app.conf.beat_schedule = {
    "dataset-gc": {"task": DATASET_GC, "schedule": GC_EVERY_S, "options": {"queue": "io"}},
    "job-sweep": {"task": JOB_SWEEP, "schedule": settings.job_sweep_s, "options": {"queue": "io", "expires": 60}},
    "tuning-drive": {"task": TUNING_DRIVE, "schedule": settings.job_sweep_s,
                     "options": {"queue": "io", "expires": 60}},
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


class _OneShotConnections:
    """``connection()`` opens a fresh connection each time: the worker's main process keeps no pool,
    so pool processes it forks later inherit no open database sockets."""

    def __init__(self, url: str):
        self.url = url

    def connection(self):
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)


_membership = None


@celeryd_after_setup.connect
def _own_queue(sender: str, instance, **_: object) -> None:
    """Consume this worker's own queue too: the scheduler sends GPU jobs to the worker holding their GPUs."""
    instance.app.amqp.queues.select_add(worker_queue(sender))


@worker_ready.connect
def _join_fleet(sender=None, **_: object) -> None:
    """In the worker's main process: register this worker and start heartbeating."""
    global _membership
    from officina.workers.fleet import Membership

    try:
        queues = sorted(sender.app.amqp.queues.consume_from) if sender is not None else []
    except AttributeError:
        queues = []
    queues = queues or settings.worker_queues.split(",")
    fleet = FleetService(_OneShotConnections(with_secrets(settings).database_url))
    name = getattr(sender, "hostname", None) or "worker"
    queues = [q for q in queues if q != worker_queue(name)]
    _membership = Membership(fleet, name, queues, settings.worker_simulated_gpus, settings.worker_lost_s)
    try:
        _membership.start()
    except Exception:  # a worker without the fleet still runs tasks; the log says why
        logger.exception("could not register this worker in the fleet")


@worker_shutdown.connect
def _leave_fleet(**_: object) -> None:
    if _membership is not None:
        _membership.stop()
