"""Jobs for users (submit, read, follow, cancel) and for the worker that runs them (attempt setup)."""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from officina.platform.auth import repo as auth_repo
from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.datasets import repo as dataset_repo
from officina.platform.datasets.archive import ArchiveLimits, iter_archive
from officina.platform.datasets.service import DatasetService
from officina.platform.errors import Conflict, Invalid, NotFound, TooLarge
from officina.platform.fleet.quotas import QuotaService
from officina.platform.jobs import repo
from officina.platform.jobs.entities import ENDED, Job, JobEvent, LogLine
from officina.platform.jobs.lifecycle import Lifecycle
from officina.platform.jobs.spec import parse_dataset_ref, parse_spec
from officina.platform.scheduler.service import release_leases, wake
from officina.platform.storage.blobs import BlobStore
from officina.platform.storage.content import blob_key, check_sha, sha256_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """What a worker needs to run one attempt: the job, its run, a token scoped to that run."""

    job: Job
    run_id: str
    token: str
    token_id: int
    datasets: dict[str, str]


class JobService:
    """Submitting and following jobs; the state machine itself lives in ``Lifecycle``."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, auth: AuthService, datasets: DatasetService,
                 lifecycle: Lifecycle, *, max_code_bundle: int, quotas: QuotaService | None = None):
        self.pool, self.blobs, self.auth, self.datasets = pool, blobs, auth, datasets
        self.lifecycle, self.max_code_bundle, self.quotas = lifecycle, max_code_bundle, quotas

    # -- code bundles ----------------------------------------------------------------------------------
    def bundle_limits(self) -> ArchiveLimits:
        return ArchiveLimits(max_entries=20_000, max_file_size=self.max_code_bundle * 4,
                             max_total_size=self.max_code_bundle * 8, max_ratio=200.0)

    def put_code(self, principal: Principal, team: str, sha256: str, data: bytes) -> tuple[dict[str, Any], bool]:
        """Store a code bundle (a .tar.gz) once; return its record and whether it was new."""
        owner = self.auth.team(principal, team, Action.WRITE)
        sha256 = check_sha(sha256)
        if len(data) > self.max_code_bundle:
            raise TooLarge(f"the code bundle is {len(data)} bytes; the limit is {self.max_code_bundle} "
                           "(OFFICINA_MAX_CODE_BUNDLE): leave data out of the code directory or list it in "
                           ".gitignore", size=len(data))
        if sha256_bytes(data) != sha256:
            raise Invalid("the code bundle's bytes do not match the sha256 in the URL", field="sha256")
        if not data.startswith(b"\x1f\x8b"):
            raise Invalid("a code bundle is a gzip-compressed tar (.tar.gz)", field="body")
        paths = [entry.path for entry in iter_archive(data, self.bundle_limits())]
        if not paths:
            raise Invalid("the code bundle holds no files", field="body")
        with self.pool.connection() as conn, conn.transaction():
            if conn.execute("SELECT 1 FROM code_bundles WHERE team_id = %s AND sha256 = %s",
                            (owner.id, sha256)).fetchone():
                return {"sha256": sha256, "size": len(data), "files": len(paths)}, False
            if not self.blobs.exists(sha256):
                self.blobs.store.put_bytes(blob_key(sha256), data, "application/gzip")
            conn.execute("INSERT INTO code_bundles (team_id, sha256, size, files, paths) VALUES (%s, %s, %s, %s, %s)"
                         " ON CONFLICT DO NOTHING", (owner.id, sha256, len(data), len(paths), Jsonb(paths)))
        return {"sha256": sha256, "size": len(data), "files": len(paths)}, True

    def has_code(self, principal: Principal, team: str, sha256: str) -> bool:
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            return conn.execute("SELECT 1 FROM code_bundles WHERE team_id = %s AND sha256 = %s",
                                (owner.id, check_sha(sha256))).fetchone() is not None

    # -- submitting ------------------------------------------------------------------------------------
    def submit(self, principal: Principal, team: str, body: Any) -> Job:
        """Check and record a job; one without GPUs is admitted and dispatched at once, the scheduler
        places the others."""
        owner, spec, resolved = self._checked(principal, team, body)
        with self.pool.connection() as conn, conn.transaction():
            stored = {**spec.to_json(), "datasets": resolved}
            job_id = repo.insert_job(conn, team_id=owner.id, name=spec.name, project=spec.project, spec=stored,
                                     queue=spec.queue, priority=spec.priority, max_retries=spec.max_retries,
                                     timeout_s=spec.timeout_s, user_id=principal.user.id)
        self.lifecycle.admit([job_id])
        return self.get(principal, job_id)

    def check(self, principal: Principal, team: str, body: Any) -> dict[str, Any]:
        """Check a job body as ``submit`` would, without submitting; return it with its datasets pinned
        to versions (so jobs made from it later all read the same data)."""
        _, _, resolved = self._checked(principal, team, body)
        return {**body, "datasets": resolved}

    def _checked(self, principal: Principal, team: str, body: Any):
        owner = self.auth.team(principal, team, Action.WRITE)
        spec = parse_spec(body)
        resolved: dict[str, str] = {}
        for key, value in spec.datasets.items():
            name, ref = parse_dataset_ref(value, key)
            try:
                version, _ = self.datasets.version(principal, team, name, ref)
            except NotFound as exc:
                raise Invalid(f"dataset {key!r}: {exc.message}", field="datasets", dataset=key) from None
            resolved[key] = f"{name}:{version.number}"
        with self.pool.connection() as conn:
            if self.quotas is not None:
                self.quotas.check_submit(conn, owner.id, owner.name, spec.priority, spec.gpus)
            if spec.code is not None:
                row = conn.execute("SELECT paths FROM code_bundles WHERE team_id = %s AND sha256 = %s",
                                   (owner.id, spec.code)).fetchone()
                if row is None:
                    raise Invalid(f"code bundle {spec.code[:12]}… has not been uploaded to team {team!r}",
                                  field="code")
                if spec.entrypoint not in row[0]:
                    raise Invalid(f"entrypoint {spec.entrypoint!r} is not in the code bundle", field="entrypoint")
        return owner, spec, resolved

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, principal: Principal, job_id: str, action: Action = Action.READ) -> Job:
        with self.pool.connection() as conn:
            job = repo.get_job(conn, job_id)
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        self.auth.team(principal, job.team, action)
        return job

    def list(self, principal: Principal, team: str, *, state: str | None = None, project: str | None = None,
             limit: int = 100) -> list[Job]:
        owner = self.auth.team(principal, team, Action.READ)
        if state is not None and state not in (*ENDED, "queued", "admitted", "running", "retrying"):
            raise Invalid(f"unknown state {state!r}", field="state")
        with self.pool.connection() as conn:
            return repo.list_jobs(conn, owner.id, state=state, project=project, limit=max(1, min(limit, 500)))

    def events(self, principal: Principal, job_id: str) -> list[JobEvent]:
        job = self.get(principal, job_id)
        with self.pool.connection() as conn:
            return repo.events(conn, job.id)

    def logs(self, principal: Principal, job_id: str, *, after: int = 0,
             attempt: int | None = None) -> tuple[Job, list[LogLine]]:
        """Log lines of one attempt (the latest by default) after sequence number ``after``."""
        job = self.get(principal, job_id)
        with self.pool.connection() as conn:
            return job, repo.logs(conn, job.id, attempt or max(job.attempt, 1), after)

    def cancel(self, principal: Principal, job_id: str, reason: str | None = None) -> Job:
        """Cancel a job: at once when it is not running, else its worker kills the process tree."""
        with self.pool.connection() as conn, conn.transaction():
            job = repo.get_job(conn, job_id, lock=True)
            if job is None:
                raise NotFound(f"job {job_id!r} not found")
            self.auth.team(principal, job.team, Action.WRITE)
            if job.ended:
                raise Conflict(f"job {job.id} already {job.state}", state=job.state)
            who = reason or f"cancelled by {principal.user.username}"
            if job.state == "running":
                conn.execute("UPDATE jobs SET cancel_requested = true, updated_at = now() WHERE id = %s", (job.id,))
                repo.add_event(conn, job.id, "running", "running", job.attempt,
                               reason or f"cancel requested by {principal.user.username}")
            else:
                conn.execute("UPDATE jobs SET state = 'cancelled', cancel_requested = true, reason = %s,"
                             " finished_at = now(), updated_at = now() WHERE id = %s", (who, job.id))
                repo.add_event(conn, job.id, job.state, "cancelled", job.attempt, who)
                release_leases(conn, "l.job_id = %s", (job.id,))
                wake(conn)
        return self.get(principal, job_id)

    # -- the worker's side -----------------------------------------------------------------------------
    def start_attempt(self, job: Job, *, api_url: str) -> Attempt:
        """Create the job's run on its first attempt, record dataset lineage, mint a run-scoped token."""
        with self.pool.connection() as conn, conn.transaction():
            run_id = job.run_id
            if run_id is None:
                run_id = str(uuid.uuid4())
                spec = job.spec
                params = dict(spec.get("params") or {})
                tags = {"job": job.id, **({"trainer": spec["trainer"]} if spec.get("trainer") else {})}
                conn.execute("INSERT INTO runs (id, team_id, project, name, job_id, status, params, tags, git,"
                             " created_by) VALUES (%s, %s, %s, %s, %s, 'running', %s, %s, %s, %s)",
                             (run_id, job.team_id, job.project, job.name, job.id, Jsonb(params), Jsonb(tags),
                              Jsonb(spec.get("git")) if spec.get("git") else None, job.created_by))
                conn.execute("UPDATE jobs SET run_id = %s WHERE id = %s", (run_id, job.id))
            else:
                conn.execute("UPDATE runs SET status = 'running', ended_at = NULL, updated_at = now()"
                             " WHERE id = %s", (run_id,))
            for role, ref in (job.spec.get("datasets") or {}).items():
                name, number = ref.rsplit(":", 1)
                dataset = dataset_repo.get_dataset(conn, job.team_id, name)
                version_id = dataset_repo.version_id(conn, dataset.id, int(number)) if dataset else None
                if version_id is not None:
                    dataset_repo.record_lineage(conn, version_id, "run", run_id, role)
        days = (job.timeout_s + 3600) / 86400
        record, token = self.auth.create_token(job.created_by, f"job {job.id[:8]} attempt {job.attempt}",
                                               expires_in_days=days, scope={"team_id": job.team_id, "run": run_id})
        return Attempt(job=job, run_id=run_id, token=token, token_id=record.id,
                       datasets=dict(job.spec.get("datasets") or {}))

    def end_attempt(self, attempt: Attempt, state: str | None, log_text: bytes) -> None:
        """Revoke the attempt's token, keep its log as a run artifact, and end the run with the job."""
        run_status = {"succeeded": "finished", "failed": "failed", "cancelled": "killed"}.get(state or "")
        sha = sha256_bytes(log_text)
        if not self.blobs.exists(sha):
            self.blobs.store.put_bytes(blob_key(sha), log_text, "text/plain")
        with self.pool.connection() as conn, conn.transaction():
            auth_repo.revoke_token(conn, attempt.token_id)
            conn.execute("INSERT INTO run_artifacts (run_id, path, kind, sha256, size) VALUES (%s, %s, 'log', %s, %s)"
                         " ON CONFLICT (run_id, path) DO UPDATE SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size",
                         (attempt.run_id, f"logs/attempt-{attempt.job.attempt}.txt", sha, len(log_text)))
            if run_status:
                conn.execute("UPDATE runs SET status = %s, ended_at = now(), updated_at = now() WHERE id = %s",
                             (run_status, attempt.run_id))

    def append_logs(self, job_id: str, attempt: int, start_seq: int, lines: list[tuple[str, str]]) -> None:
        with self.pool.connection() as conn:
            repo.append_logs(conn, job_id, attempt, start_seq, lines)

    def code_bytes(self, sha256: str) -> bytes:
        return self.blobs.get_bytes(sha256)
