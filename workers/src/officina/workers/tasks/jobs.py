"""Job tasks: run one attempt (on the job's queue) and the periodic sweep. Thin wrappers over the platform."""
from __future__ import annotations

from dataclasses import asdict

from officina.platform.tasks import JOB_RUN, JOB_SWEEP
from officina.workers.app import app, services, settings
from officina.workers.runner import JobRunner


@app.task(name=JOB_RUN, bind=True)
def run(self, job_id: str, attempt: int) -> str:
    """Run attempt ``attempt`` of a job; a stale or duplicate message does nothing."""
    svc = services()
    worker = f"{self.request.hostname or 'worker'}:{self.request.id}"
    return JobRunner(settings, svc.jobs, svc.lifecycle, worker=worker).run(job_id, int(attempt))


@app.task(name=JOB_SWEEP, acks_late=False)
def sweep() -> dict:
    """Mark silent workers lost, retry jobs whose worker was lost, re-send undelivered messages (of jobs and
    of model work), and schedule when no scheduler leader is running (a standby for the standby)."""
    svc = services()
    lost = svc.fleet.mark_lost(settings.worker_lost_s)
    report = asdict(svc.lifecycle.sweep())
    scheduled = svc.scheduler.run_pass(only_without_leader=True)
    models = svc.models.sweep()
    return {**report, **models, "workers_lost": lost, "scheduled_without_leader": scheduled is not None}
