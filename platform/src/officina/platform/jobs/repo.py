"""SQL of jobs. Functions take a connection and never open one; transitions write their event."""
from __future__ import annotations

import uuid

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from officina.platform.db.ids import valid_uuid
from officina.platform.jobs.entities import Job, JobEvent, LogLine

_JOB = """
SELECT j.id::text AS id, j.team_id, t.name AS team, j.name, j.project, j.spec, j.queue, j.priority, j.state,
       j.attempt, j.max_retries, j.timeout_s, j.lease_owner, j.lease_expires_at, j.cancel_requested, j.reason,
       j.exit_code, j.run_id::text AS run_id, j.created_by, j.created_at, j.started_at, j.finished_at, j.updated_at,
       j.gpus, j.worker, j.gpu_indices, j.preempt_reason, j.preemptions
FROM jobs j JOIN teams t ON t.id = j.team_id"""


def insert_job(conn, *, team_id: int, name: str, project: str, spec: dict, queue: str, priority: int,
               max_retries: int, timeout_s: int, user_id: int) -> str:
    job_id = str(uuid.uuid4())
    conn.execute("INSERT INTO jobs (id, team_id, name, project, spec, queue, priority, state, max_retries,"
                 " timeout_s, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s)",
                 (job_id, team_id, name, project, Jsonb(spec), queue, priority, max_retries, timeout_s, user_id))
    add_event(conn, job_id, None, "queued", 0, "submitted")
    return job_id


def get_job(conn, job_id: str, *, lock: bool = False) -> Job | None:
    if valid_uuid(job_id) is None:
        return None
    with conn.cursor(row_factory=class_row(Job)) as cur:
        return cur.execute(_JOB + " WHERE j.id = %s" + (" FOR UPDATE OF j" if lock else ""), (job_id,)).fetchone()


def list_jobs(conn, team_id: int, *, state: str | None = None, project: str | None = None,
              limit: int = 100) -> list[Job]:
    sql, args = _JOB + " WHERE j.team_id = %s", [team_id]
    if state:
        sql += " AND j.state = %s"
        args.append(state)
    if project:
        sql += " AND j.project = %s"
        args.append(project)
    with conn.cursor(row_factory=class_row(Job)) as cur:
        return cur.execute(sql + " ORDER BY j.created_at DESC LIMIT %s", (*args, limit)).fetchall()


def add_event(conn, job_id: str, from_state: str | None, to_state: str, attempt: int, reason: str,
              detail: dict | None = None) -> None:
    conn.execute("INSERT INTO job_events (job_id, from_state, to_state, attempt, reason, detail)"
                 " VALUES (%s, %s, %s, %s, %s, %s)", (job_id, from_state, to_state, attempt, reason,
                                                      Jsonb(detail or {})))


def events(conn, job_id: str) -> list[JobEvent]:
    with conn.cursor(row_factory=class_row(JobEvent)) as cur:
        return cur.execute("SELECT at, from_state, to_state, attempt, reason, detail FROM job_events"
                           " WHERE job_id = %s ORDER BY id", (job_id,)).fetchall()


def append_logs(conn, job_id: str, attempt: int, start_seq: int, lines: list[tuple[str, str]]) -> None:
    with conn.cursor().copy("COPY job_logs (job_id, attempt, seq, stream, line) FROM STDIN") as copy:
        for i, (stream, line) in enumerate(lines):
            copy.write_row((job_id, attempt, start_seq + i, stream, line))


def logs(conn, job_id: str, attempt: int, after: int, limit: int = 2000) -> list[LogLine]:
    with conn.cursor(row_factory=class_row(LogLine)) as cur:
        return cur.execute("SELECT seq, attempt, stream, at, line FROM job_logs WHERE job_id = %s AND attempt = %s"
                           " AND seq > %s ORDER BY seq LIMIT %s", (job_id, attempt, after, limit)).fetchall()
