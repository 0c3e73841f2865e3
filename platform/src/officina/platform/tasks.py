"""Task names, queues and the Celery configuration shared by senders (web) and workers.

Senders use ``send_task(name, ...)`` with these constants, so web never imports worker code.
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from officina.platform.errors import Unavailable
from officina.platform.settings import Settings

QUEUES = ("cpu", "gpu", "io")
PING = "officina.system.ping"
DATASET_BUILD = "officina.datasets.build"
DATASET_GC = "officina.datasets.gc"
GC_EVERY_S = 3600.0
JOB_RUN = "officina.jobs.run"
JOB_SWEEP = "officina.jobs.sweep"
TUNING_DRIVE = "officina.tuning.drive"
MODEL_EVALUATE = "officina.models.evaluate"
MODEL_EXPORT = "officina.models.export"
MODEL_BATCH_PREDICT = "officina.models.batch_predict"


def celery_config(settings: Settings) -> dict:
    """Celery settings: JSON only, late acks with reject-on-worker-lost, one message at a time."""
    if not settings.broker_url:
        raise Unavailable("no broker configured: set OFFICINA_BROKER_URL")
    return dict(
        broker_url=settings.broker_url,
        result_backend=settings.broker_url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 5},
        result_backend_transport_options={"socket_timeout": 5, "socket_connect_timeout": 5},
        result_expires=3600,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_create_missing_queues=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        timezone="UTC",
        enable_utc=True,
    )


def make_celery(settings: Settings, *, include: tuple[str, ...] = ()) -> Celery:
    """A Celery app configured from ``settings`` (workers pass the task modules to include)."""
    app = Celery("officina", include=list(include), set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
