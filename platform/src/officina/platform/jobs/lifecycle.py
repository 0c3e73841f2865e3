"""The job state machine under leases: admit, dispatch, claim, heartbeat, finish, yield, sweep.

``queued → admitted → running → succeeded | failed | cancelled``; ``running → retrying → queued``
when a worker is lost, and ``running → queued`` when the scheduler preempts the job. Jobs without
GPUs are admitted at submit; the scheduler (``scheduler/``) admits the rest. Each admission bumps ``attempt``, the fencing token: a claim,
heartbeat or finish that carries an older attempt changes nothing. The row is committed before its
message is sent; the sweep re-sends messages of admitted jobs nobody claimed (a wiped broker
loses no job) and retries jobs whose lease expired (a killed worker loses no job).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from officina.platform.jobs import repo
from officina.platform.jobs.entities import Job
from officina.platform.scheduler.service import release_leases, wake
from officina.platform.tasks import JOB_RUN

logger = logging.getLogger(__name__)

RESEND_BACKOFF_MAX = 6  # re-sends of one attempt back off up to 2**6 lease periods


@dataclass(frozen=True)
class SweepReport:
    resent: int
    retried: int
    failed: int
    cancelled: int


class Lifecycle:
    """Transitions of jobs; ``send_task(name, args, queue)`` dispatches attempts to workers."""

    def __init__(self, pool: ConnectionPool, send_task: Callable[[str, list, str], None], *, lease_s: float):
        self.pool, self._send, self.lease_s = pool, send_task, lease_s
        self.resend_after_s = lease_s  # a message nobody claimed within a lease period is sent again

    # -- admission and dispatch ------------------------------------------------------------------------
    def admit(self, job_ids: list[str]) -> int:
        """Admit and dispatch the given queued jobs that need no GPU (nothing to schedule); wake the
        scheduler for the others. Return how many were admitted here."""
        with self.pool.connection() as conn, conn.transaction():
            jobs = [j for j in (repo.get_job(conn, i, lock=True) for i in job_ids) if j and j.state == "queued"]
            admitted = [j for j in jobs if j.gpus == 0]
            for job in admitted:
                self._admit(conn, job, f"admitted to queue {job.queue}")
            if len(admitted) < len(jobs):
                wake(conn)
        for job in admitted:
            self._dispatch(job.id, job.attempt + 1, job.queue)
        return len(admitted)

    def _admit(self, conn, job: Job, reason: str) -> None:
        conn.execute("UPDATE jobs SET state = 'admitted', attempt = attempt + 1, dispatched_at = now(),"
                      " dispatches = 1, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
                      " WHERE id = %s", (job.id,))
        repo.add_event(conn, job.id, job.state, "admitted", job.attempt + 1, reason)

    def _dispatch(self, job_id: str, attempt: int, queue: str) -> None:
        try:
            self._send(JOB_RUN, [job_id, attempt], queue)
        except Exception:  # the sweep re-sends what was not delivered
            logger.warning("could not send job %s attempt %s; the sweep will retry", job_id, attempt, exc_info=True)

    # -- a worker's side -------------------------------------------------------------------------------
    def claim(self, job_id: str, attempt: int, worker: str) -> Job | None:
        """Start an attempt: admitted with this attempt number → running under a lease. None when fenced out."""
        with self.pool.connection() as conn, conn.transaction():
            job = repo.get_job(conn, job_id, lock=True)
            if job is None or job.state != "admitted" or job.attempt != attempt:
                return None
            if job.cancel_requested:
                conn.execute("UPDATE jobs SET state = 'cancelled', reason = 'cancelled before it started',"
                             " finished_at = now(), updated_at = now() WHERE id = %s", (job.id,))
                repo.add_event(conn, job.id, job.state, "cancelled", attempt, "cancelled before it started")
                release_leases(conn, "l.job_id = %s", (job.id,))
                wake(conn)
                return None
            if job.preempt_reason:
                self._requeue(conn, job, job.preempt_reason)
                return None
            conn.execute("UPDATE jobs SET state = 'running', lease_owner = %s,"
                         " lease_expires_at = now() + make_interval(secs => %s),"
                         " started_at = coalesce(started_at, now()), updated_at = now() WHERE id = %s",
                         (worker, self.lease_s, job.id))
            repo.add_event(conn, job.id, job.state, "running", attempt, f"started on {worker}")
            return repo.get_job(conn, job.id)

    def heartbeat(self, job_id: str, attempt: int, worker: str) -> str:
        """Renew the lease: ``"ok"``, ``"cancel"`` (cancel requested), ``"preempt"`` (checkpoint and
        yield) or ``"lost"`` (fenced out)."""
        with self.pool.connection() as conn:
            row = conn.execute("UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s),"
                               " updated_at = now() WHERE id = %s AND attempt = %s AND state = 'running'"
                               " AND lease_owner = %s RETURNING cancel_requested, preempt_reason IS NOT NULL",
                               (self.lease_s, job_id, attempt, worker)).fetchone()
        if row is None:
            return "lost"
        return "cancel" if row[0] else "preempt" if row[1] else "ok"

    def finish(self, job_id: str, attempt: int, state: str, reason: str, *, exit_code: int | None = None) -> bool:
        """End a running attempt (succeeded, failed or cancelled); False when this attempt no longer owns the job."""
        with self.pool.connection() as conn, conn.transaction():
            job = repo.get_job(conn, job_id, lock=True)
            if job is None or job.state != "running" or job.attempt != attempt:
                return False
            conn.execute("UPDATE jobs SET state = %s, reason = %s, exit_code = %s, finished_at = now(),"
                         " lease_owner = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = %s",
                         (state, reason, exit_code, job.id))
            repo.add_event(conn, job.id, "running", state, attempt, reason, {"exit_code": exit_code})
            release_leases(conn, "l.job_id = %s", (job.id,))
            wake(conn)
            return True

    def yield_attempt(self, job_id: str, attempt: int) -> bool:
        """A preempted attempt stopped: back to the queue (resuming from its checkpoint); its GPUs are free."""
        with self.pool.connection() as conn, conn.transaction():
            job = repo.get_job(conn, job_id, lock=True)
            if job is None or job.state != "running" or job.attempt != attempt:
                return False
            self._requeue(conn, job, job.preempt_reason or "preempted")
            return True

    def _requeue(self, conn, job: Job, reason: str) -> None:
        conn.execute("UPDATE jobs SET state = 'queued', reason = %s, worker = NULL, gpu_indices = '{}',"
                     " preempt_reason = NULL, preemptions = preemptions + 1, lease_owner = NULL,"
                     " lease_expires_at = NULL, updated_at = now() WHERE id = %s", (reason, job.id))
        repo.add_event(conn, job.id, job.state, "queued", job.attempt, reason)
        release_leases(conn, "l.job_id = %s", (job.id,))
        wake(conn)

    # -- the sweep -------------------------------------------------------------------------------------
    def sweep(self) -> SweepReport:
        """Retry jobs whose lease expired (GPU jobs go back to the scheduler), re-send undelivered messages."""
        retried = failed = cancelled = resent = 0
        to_dispatch: list[tuple[str, int, str]] = []
        with self.pool.connection() as conn, conn.transaction():
            expired = [r[0] for r in conn.execute(
                "SELECT id::text FROM jobs WHERE state = 'running' AND lease_expires_at < now()"
                " FOR UPDATE SKIP LOCKED")]
            for job_id in expired:
                job = repo.get_job(conn, job_id)
                lost = f"worker {job.lease_owner} stopped renewing the lease of attempt {job.attempt}"
                if job.cancel_requested:
                    conn.execute("UPDATE jobs SET state = 'cancelled', reason = %s, finished_at = now(),"
                                 " lease_owner = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = %s",
                                 ("cancelled (its worker was lost)", job.id))
                    repo.add_event(conn, job.id, "running", "cancelled", job.attempt, "cancelled; " + lost)
                    _end_run(conn, job, "killed")
                    cancelled += 1
                elif job.attempt - job.preemptions > job.max_retries:
                    reason = f"failed after {job.attempt - job.preemptions} attempts: {lost}"
                    conn.execute("UPDATE jobs SET state = 'failed', reason = %s, finished_at = now(),"
                                 " lease_owner = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = %s",
                                 (reason, job.id))
                    repo.add_event(conn, job.id, "running", "failed", job.attempt, reason)
                    _end_run(conn, job, "failed")
                    failed += 1
                else:
                    conn.execute("UPDATE jobs SET state = 'retrying', reason = %s, lease_owner = NULL,"
                                 " lease_expires_at = NULL, updated_at = now() WHERE id = %s", (lost, job.id))
                    repo.add_event(conn, job.id, "running", "retrying", job.attempt, lost)
                    retrying = repo.get_job(conn, job.id)
                    retry = f"retry {job.attempt - job.preemptions} of {job.max_retries}"
                    if job.gpus:  # its worker may be gone: the scheduler places it again
                        conn.execute("UPDATE jobs SET state = 'queued', reason = %s, worker = NULL,"
                                     " gpu_indices = '{}', updated_at = now() WHERE id = %s", (retry, job.id))
                        repo.add_event(conn, job.id, "retrying", "queued", job.attempt, retry)
                        release_leases(conn, "l.job_id = %s", (job.id,))
                        wake(conn)
                    else:
                        self._admit(conn, retrying, retry)
                        to_dispatch.append((job.id, job.attempt + 1, job.queue))
                    retried += 1
            stale = conn.execute(
                "SELECT id::text, attempt, coalesce('w.' || worker, queue) FROM jobs WHERE state = 'admitted'"
                " AND dispatched_at"
                " < now() - make_interval(secs => %s * power(2, least(dispatches - 1, %s)))"
                " FOR UPDATE SKIP LOCKED", (self.resend_after_s, RESEND_BACKOFF_MAX)).fetchall()
            for job_id, attempt, queue in stale:
                conn.execute("UPDATE jobs SET dispatched_at = now(), dispatches = dispatches + 1 WHERE id = %s",
                             (job_id,))
                to_dispatch.append((job_id, attempt, queue))
                resent += 1
            if failed or cancelled:
                release_leases(conn, "NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = l.job_id AND j.attempt = l.attempt"
                                     " AND j.state IN ('admitted', 'running'))")
                wake(conn)
        for job_id, attempt, queue in to_dispatch:
            self._dispatch(job_id, attempt, queue)
        report = SweepReport(resent, retried, failed, cancelled)
        if any((retried, failed, cancelled, resent)):
            logger.info("job sweep: %s", report)
        return report


def _end_run(conn, job: Job, status: str) -> None:
    if job.run_id:
        conn.execute("UPDATE runs SET status = %s, ended_at = now(), updated_at = now() WHERE id = %s",
                     (status, job.run_id))
