"""The services one process opens once: the database pool, object store and task sender."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from celery import Celery
from kombu import Queue
from psycopg_pool import ConnectionPool

from officina.platform.auth.service import AuthService
from officina.platform.datasets.builds import BuildService
from officina.platform.datasets.service import DatasetService
from officina.platform.db import open_pool
from officina.platform.fleet.quotas import QuotaService
from officina.platform.fleet.service import FleetService
from officina.platform.jobs.lifecycle import Lifecycle
from officina.platform.jobs.service import JobService
from officina.platform.models.service import ModelService
from officina.platform.scheduler.queue import QueueView
from officina.platform.scheduler.service import Scheduler
from officina.platform.settings import Settings, with_secrets
from officina.platform.storage import ObjectStore
from officina.platform.storage.blobs import BlobStore
from officina.platform.tracking.service import TrackingService
from officina.platform.tuning.service import StudyService
from officina.platform.tasks import make_celery


@dataclass
class Services:
    """Shared by web and workers; each area's service is built lazily over the same pool."""

    settings: Settings
    pool: ConnectionPool
    store: ObjectStore
    celery: Celery = field(repr=False)

    @classmethod
    def open(cls, settings: Settings, *, pool_size: int = 10, celery: Celery | None = None) -> "Services":
        """Open the pool (waiting for the database), the object store and the task sender."""
        settings = with_secrets(settings)
        if not settings.database_url:
            from officina.platform.errors import Unavailable

            raise Unavailable("no database configured: set OFFICINA_DATABASE_URL or run `officina up`")
        pool = open_pool(settings.database_url, max_size=pool_size)
        return cls(settings=settings, pool=pool, store=ObjectStore.from_settings(settings),
                   celery=celery or make_celery(settings))

    @cached_property
    def auth(self) -> AuthService:
        return AuthService(self.pool, token_ttl_days=self.settings.token_ttl_days)

    @cached_property
    def datasets(self) -> DatasetService:
        return DatasetService(self.pool, BlobStore(self.store), self.auth)

    @cached_property
    def builds(self) -> BuildService:
        return BuildService(self.pool, BlobStore(self.store), self.auth, self.send_task,
                            max_body=self.settings.max_body, max_file=self.settings.max_file)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.pool, self.send_task, lease_s=self.settings.job_lease_s)

    @cached_property
    def jobs(self) -> JobService:
        return JobService(self.pool, BlobStore(self.store), self.auth, self.datasets, self.lifecycle,
                          max_code_bundle=self.settings.max_code_bundle, quotas=self.quotas)

    @cached_property
    def quotas(self) -> QuotaService:
        return QuotaService(self.pool, self.auth)

    @cached_property
    def fleet(self) -> FleetService:
        return FleetService(self.pool)

    @cached_property
    def scheduler(self) -> Scheduler:
        return Scheduler(self.pool, self.send_task, worker_lost_s=self.settings.worker_lost_s)

    @cached_property
    def queue(self) -> QueueView:
        return QueueView(self.pool)

    @cached_property
    def studies(self) -> StudyService:
        return StudyService(self.pool, self.auth, self.jobs, self.settings.database_url)

    @cached_property
    def models(self) -> ModelService:
        return ModelService(self.pool, BlobStore(self.store), self.auth, self.send_task)

    @cached_property
    def tracking(self) -> TrackingService:
        return TrackingService(self.pool, BlobStore(self.store), self.auth)

    def send_task(self, name: str, args: list, queue: str) -> None:
        """Send a task message (callers commit the job row first). ``queue`` is one of ``QUEUES`` or a
        worker's own queue (declared here as the worker declares it: the default exchange, routed by name)."""
        queues = self.celery.amqp.queues
        if queue not in queues:
            queues.add(Queue(queue, routing_key=queue))
        self.celery.send_task(name, args=args, queue=queue)

    def close(self) -> None:
        self.pool.close()
