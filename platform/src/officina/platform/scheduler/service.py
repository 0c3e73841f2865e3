"""The scheduler in Postgres: read a snapshot, apply the policy, write leases and admissions in one
transaction, then dispatch to the chosen workers.

A pass holds ``PASS_LOCK`` for its transaction, so passes never overlap, whoever runs them; GPU
lease rows have (worker, gpu) as their key, so a GPU is never held twice even by a buggy caller;
and a job moves ``queued → admitted`` only under its row lock. The leader (one at a time, see
``leader.py``) runs passes when woken (``NOTIFY officina_schedule``) or every few seconds.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from officina.platform.jobs import repo as job_repo
from officina.platform.scheduler.policy import (Decision, QueuedJob, RunningJob, TeamPolicy, WorkerSlot,
                                                schedule)
from officina.platform.tasks import JOB_RUN

logger = logging.getLogger(__name__)

LEADER_LOCK = 0x0FF1C1A5C4ED  # session lock of the leader
PASS_LOCK = 0x0FF1C1A5C4EE    # transaction lock of one pass
CHANNEL = "officina_schedule"


def worker_queue(worker: str) -> str:
    """The Celery queue only ``worker`` consumes (GPU jobs are dispatched there)."""
    return f"w.{worker}"


def wake(conn) -> None:
    """Ask the scheduler for a pass when ``conn``'s transaction commits."""
    conn.execute(f"NOTIFY {CHANNEL}")


def release_leases(conn, where: str, args: tuple = ()) -> int:
    """Delete GPU leases matching ``where`` (SQL over ``l``, the lease), recording their usage for budgets."""
    return conn.execute(
        f"WITH gone AS (DELETE FROM gpu_leases l WHERE {where} RETURNING l.team_id, l.since)"
        " INSERT INTO gpu_usage (team_id, since, until) SELECT team_id, since, now() FROM gone", args).rowcount


@dataclass(frozen=True)
class PassReport:
    queued: int
    placed: int
    waiting: int
    preempted: int
    requeued: int
    gpus: int
    gpus_free: int
    ms: float


class Scheduler:
    """One scheduling pass at a time; ``send_task(name, args, queue)`` dispatches attempts."""

    def __init__(self, pool: ConnectionPool, send_task: Callable[[str, list, str], None], *,
                 worker_lost_s: float, preemption: bool = True):
        self.pool, self._send, self.worker_lost_s, self.preemption = pool, send_task, worker_lost_s, preemption

    def run_pass(self, *, only_without_leader: bool = False) -> PassReport | None:
        """Schedule once. With ``only_without_leader``, do it only when no leader holds the lock (the
        sweep's fallback); None when skipped."""
        started = time.perf_counter()
        with self.pool.connection() as conn, conn.transaction():
            if only_without_leader and not conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                                                        (LEADER_LOCK,)).fetchone()[0]:
                return None
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PASS_LOCK,))
            requeued = self._housekeep(conn)
            workers, teams, queued, running = self._snapshot(conn)
            decision = schedule(workers, teams, queued, running, preemption=self.preemption)
            dispatch = self._apply(conn, decision, queued)
            gpus = sum(w.gpus for w in workers)
            report = PassReport(len(queued), len(dispatch), len(decision.waiting), len(decision.preempt), requeued,
                                gpus, sum(len(w.free) for w in workers), 0.0)
        for job_id, attempt, queue in dispatch:
            try:
                self._send(JOB_RUN, [job_id, attempt], queue)
            except Exception:  # the sweep re-sends what was not delivered
                logger.warning("could not send job %s attempt %s", job_id, attempt, exc_info=True)
        report = PassReport(**{**asdict(report), "ms": round((time.perf_counter() - started) * 1000, 2)})
        with self.pool.connection() as conn:
            conn.execute("UPDATE scheduler_state SET pass_at = now(), pass_ms = %s, pass = %s",
                         (report.ms, Jsonb(asdict(report))))
        if report.placed or report.preempted or report.requeued:
            logger.info("scheduling pass: %s", report)
        return report

    # -- the pass --------------------------------------------------------------------------------------
    def _housekeep(self, conn) -> int:
        """Release leases of ended attempts and lost workers; requeue jobs admitted to a worker that is gone."""
        release_leases(conn, "NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = l.job_id AND j.attempt = l.attempt"
                             " AND j.state IN ('admitted', 'running'))")
        release_leases(conn, "NOT EXISTS (SELECT 1 FROM workers w WHERE w.name = l.worker AND w.status = 'online')")
        gone = conn.execute(
            "SELECT j.id::text, j.attempt, j.worker FROM jobs j LEFT JOIN workers w ON w.name = j.worker"
            " WHERE j.state = 'admitted' AND j.worker IS NOT NULL AND w.status IS DISTINCT FROM 'online'"
            " FOR UPDATE OF j SKIP LOCKED").fetchall()
        for job_id, attempt, worker in gone:
            reason = f"worker {worker} went away before starting attempt {attempt}"
            conn.execute("UPDATE jobs SET state = 'queued', worker = NULL, gpu_indices = '{}', reason = %s,"
                         " preemptions = preemptions + 1, updated_at = now() WHERE id = %s", (reason, job_id))
            job_repo.add_event(conn, job_id, "admitted", "queued", attempt, reason)
        return len(gone)

    def _snapshot(self, conn) -> tuple[list[WorkerSlot], list[TeamPolicy], list[QueuedJob], list[RunningJob]]:
        held: dict[str, set[int]] = defaultdict(set)
        for worker, index in conn.execute("SELECT worker, gpu_index FROM gpu_leases"):
            held[worker].add(index)
        used = {w: (float(c), int(m)) for w, c, m in conn.execute(
            "SELECT worker, sum((spec->>'cpus')::float), sum((spec->>'memory_mb')::bigint) FROM jobs"
            " WHERE state IN ('admitted', 'running') AND worker IS NOT NULL GROUP BY worker")}
        workers = []
        for name, queues, cpus, memory_mb, gpus in conn.execute(
                "SELECT name, queues, cpus, memory_mb, gpus FROM workers WHERE status = 'online'"
                " AND last_heartbeat > now() - make_interval(secs => %s) ORDER BY name", (self.worker_lost_s,)):
            indices = sorted(g["index"] for g in gpus)
            c, m = used.get(name, (0.0, 0))
            workers.append(WorkerSlot(name, frozenset(queues), len(indices),
                                      [i for i in indices if i not in held[name]], cpus - c, memory_mb - m))
        queued = [QueuedJob(i, t, g, p, c, q, float(cpu), int(mem)) for i, t, g, p, c, q, cpu, mem in conn.execute(
            "SELECT id::text, team_id, gpus, priority, extract(epoch FROM created_at)::float8, queue,"
            " coalesce((spec->>'cpus')::float, 1), coalesce((spec->>'memory_mb')::bigint, 0)"
            " FROM jobs WHERE state = 'queued' AND NOT cancel_requested")]
        running = [RunningJob(*row) for row in conn.execute(
            "SELECT id::text, team_id, gpus, priority, worker, extract(epoch FROM coalesce(started_at, updated_at))"
            "::float8, preempt_reason IS NOT NULL FROM jobs WHERE state IN ('admitted', 'running') AND gpus > 0")]
        teams = [TeamPolicy(*row) for row in conn.execute(
            "SELECT t.id, t.name, coalesce(q.weight, 1), q.max_gpus, q.gpu_hours_per_week,"
            " (((SELECT coalesce(sum(extract(epoch FROM until - greatest(since, date_trunc('week', now())))), 0)"
            "   FROM gpu_usage u WHERE u.team_id = t.id AND u.until > date_trunc('week', now()))"
            "  + (SELECT coalesce(sum(extract(epoch FROM now() - greatest(since, date_trunc('week', now())))), 0)"
            "   FROM gpu_leases l WHERE l.team_id = t.id)) / 3600.0)::float8,"
            " (SELECT count(*) FROM gpu_leases l WHERE l.team_id = t.id)::int"
            " FROM teams t LEFT JOIN team_quotas q ON q.team_id = t.id"
            " WHERE t.id = ANY(%s)", (list({j.team_id for j in queued} | {j.team_id for j in running}),))]
        return workers, teams, queued, running

    def _apply(self, conn, decision: Decision, queued: list[QueuedJob]) -> list[tuple[str, int, str]]:
        """Write the decision; return the (job, attempt, queue) messages to send after commit."""
        queue_of = {j.id: j.queue for j in queued}
        team_of = {j.id: j.team_id for j in queued}
        dispatch = []
        for p in decision.placements:
            row = conn.execute(
                "UPDATE jobs SET state = 'admitted', attempt = attempt + 1, worker = %s, gpu_indices = %s,"
                " reason = '', preempt_reason = NULL, dispatched_at = now(), dispatches = 1, lease_owner = NULL,"
                " lease_expires_at = NULL, updated_at = now() WHERE id = %s AND state = 'queued'"
                " AND NOT cancel_requested RETURNING attempt", (p.worker, list(p.gpu_indices), p.job_id)).fetchone()
            if row is None:
                continue
            attempt = row[0]
            if p.worker is not None:
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO gpu_leases (worker, gpu_index, job_id, attempt, team_id)"
                                    " VALUES (%s, %s, %s, %s, %s)",
                                    [(p.worker, i, p.job_id, attempt, team_of[p.job_id]) for i in p.gpu_indices])
                where = f"on {p.worker}, GPU{'s' if len(p.gpu_indices) > 1 else ''} " + \
                        ",".join(map(str, p.gpu_indices))
            else:
                where = f"to queue {queue_of[p.job_id]}"
            job_repo.add_event(conn, p.job_id, "queued", "admitted", attempt, f"admitted {where}")
            dispatch.append((p.job_id, attempt, worker_queue(p.worker) if p.worker else queue_of[p.job_id]))
        if decision.waiting:
            conn.execute("UPDATE jobs SET reason = w.reason FROM unnest(%s::uuid[], %s::text[]) AS w (id, reason)"
                         " WHERE jobs.id = w.id AND jobs.state = 'queued' AND jobs.reason IS DISTINCT FROM w.reason",
                         (list(decision.waiting), list(decision.waiting.values())))
        for job_id, reason in decision.preempt.items():
            row = conn.execute("UPDATE jobs SET preempt_reason = %s, updated_at = now() WHERE id = %s"
                               " AND state IN ('admitted', 'running') AND preempt_reason IS NULL"
                               " RETURNING state, attempt", (reason, job_id)).fetchone()
            if row is not None:
                job_repo.add_event(conn, job_id, row[0], row[0], row[1], f"preemption requested: {reason}")
        return dispatch

    # -- for the console and the API -------------------------------------------------------------------
    def state(self) -> dict:
        """The leader and the last pass."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT leader, leader_since, pass_at, pass_ms, pass FROM scheduler_state").fetchone()
        leader, since, at, ms, last = row if row else (None, None, None, None, {})
        return {"leader": leader, "leader_since": since, "last_pass_at": at, "last_pass_ms": ms, "last_pass": last}
