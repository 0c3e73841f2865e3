"""What the scheduler is doing, for people: the queue with each job's waiting reason, and who holds each GPU."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row
from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Principal

MAX_LISTED = 500


@dataclass(frozen=True)
class QueueEntry:
    id: str
    team: str
    name: str
    state: str
    gpus: int
    priority: int
    reason: str
    worker: str | None
    gpu_indices: list[int]
    preempt_reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class GpuHolder:
    worker: str
    gpu_index: int
    job_id: str
    team: str
    job_name: str
    since: datetime


class QueueView:
    """Read-only views over jobs and GPU leases."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def queue(self, principal: Principal, *, limit: int = MAX_LISTED) -> list[QueueEntry]:
        """Active jobs (running and admitted first, then queued in scheduling order) of the teams the
        caller can see (every team for admins)."""
        sql = ("SELECT j.id::text AS id, t.name AS team, j.name, j.state, j.gpus, j.priority, j.reason, j.worker,"
               " j.gpu_indices, j.preempt_reason, j.created_at FROM jobs j JOIN teams t ON t.id = j.team_id"
               " WHERE j.state IN ('queued', 'admitted', 'running', 'retrying')")
        args: list = []
        if not principal.is_admin:
            sql += " AND j.team_id = ANY(%s)"
            args.append(list(principal.roles))
        sql += " ORDER BY j.state = 'queued', j.priority DESC, j.created_at LIMIT %s"
        args.append(min(max(1, limit), MAX_LISTED))
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(QueueEntry)) as cur:
            return cur.execute(sql, args).fetchall()

    def holders(self) -> dict[tuple[str, int], GpuHolder]:
        """Who holds each leased GPU: (worker, index) → holder. The fleet is shared, so anyone may see it."""
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(GpuHolder)) as cur:
            rows = cur.execute("SELECT l.worker, l.gpu_index, l.job_id::text AS job_id, t.name AS team,"
                               " j.name AS job_name, l.since FROM gpu_leases l JOIN jobs j ON j.id = l.job_id"
                               " JOIN teams t ON t.id = l.team_id").fetchall()
        return {(h.worker, h.gpu_index): h for h in rows}
