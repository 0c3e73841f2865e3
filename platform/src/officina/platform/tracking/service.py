"""Tracking for users and jobs: runs, parameters, metrics (batched, idempotent), artifacts, checkpoints.

A job's run token (scope ``{"run": id}``) may write only to that run; everyone else needs write
access to the run's team.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.datasets.archive import validate_relpath
from officina.platform.datasets.build_repo import GC_LOCK
from officina.platform.errors import Forbidden, Invalid, NotFound
from officina.platform.storage.blobs import BlobStore
from officina.platform.storage.content import blob_key, sha256_bytes
from officina.platform.tracking import repo
from officina.platform.tracking.entities import Artifact, Checkpoint, Run

MAX_POINTS_PER_CALL = 10_000
MAX_HISTORY_POINTS = 20_000
STATUSES = ("running", "finished", "failed", "killed")
ARTIFACT_KINDS = ("artifact", "model")
CHECKPOINT_FORMATS = ("bytes", "torch")
_KEY = re.compile(r"^[A-Za-z0-9_\-./: ]{1,250}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


def _check_json_object(value: Any, field: str, limit: int = 256 * 1024) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{field} must be a JSON object", field=field)
    try:
        if len(json.dumps(value, allow_nan=False)) > limit:
            raise Invalid(f"{field} must be at most {limit // 1024} KiB of JSON", field=field)
    except ValueError:
        raise Invalid(f"{field} must be JSON without NaN or Infinity", field=field) from None
    return value


class TrackingService:
    """Runs of a team and everything logged to them."""

    def __init__(self, pool: ConnectionPool, blobs: BlobStore, auth: AuthService):
        self.pool, self.blobs, self.auth = pool, blobs, auth

    # -- runs ------------------------------------------------------------------------------------------
    def create_run(self, principal: Principal, team: str, body: Any) -> Run:
        owner = self.auth.team(principal, team, Action.WRITE)
        body = _check_json_object(body, "body")
        unknown = sorted(set(body) - {"project", "name", "params", "tags", "git"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
        project = body.get("project") or "default"
        name = body.get("name") or datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S")
        for label, value in (("project", project), ("name", name)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise Invalid(f"{label} must be 1-100 letters, digits, spaces, '.', '_' or '-'", field=label)
        with self.pool.connection() as conn:
            run_id = repo.insert_run(conn, team_id=owner.id, project=project, name=name,
                                     params=_check_json_object(body.get("params") or {}, "params"),
                                     tags=_check_json_object(body.get("tags") or {}, "tags"),
                                     git=_check_json_object(body["git"], "git") if body.get("git") else None,
                                     user_id=principal.user.id)
        return self.get(principal, run_id)

    def get(self, principal: Principal, run_id: str) -> Run:
        with self.pool.connection() as conn:
            run = repo.get_run(conn, run_id)
            if run is None:
                raise NotFound(f"run {run_id!r} not found")
            self.auth.team(principal, run.team, Action.READ)
            return Run(**{**run.__dict__, "metrics": repo.last_metrics(conn, [run.id]).get(run.id, {})})

    def control(self, principal: Principal, run_id: str) -> dict[str, Any]:
        """Whether the run's job should stop now (cancelled, pruned by a study, or preempted) and why."""
        run = self._readable(principal, run_id)
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT j.cancel_requested, j.preempt_reason, (SELECT e.reason FROM job_events e WHERE e.job_id = j.id"
                " ORDER BY e.id DESC LIMIT 1) FROM jobs j WHERE j.run_id = %s", (run.id,)).fetchone()
        if row is None:
            return {"stop": False, "reason": ""}
        cancel, preempt, last = row
        if cancel:
            return {"stop": True, "reason": last or "cancelled"}
        if preempt:
            return {"stop": True, "reason": preempt}
        return {"stop": False, "reason": ""}

    def list(self, principal: Principal, team: str, *, project: str | None = None, status: str | None = None,
             q: str | None = None, sort: str | None = None, limit: int = 100) -> list[Run]:
        """Runs of a team, newest first or sorted by a metric (``metric:<key>:desc``), with last metric values."""
        owner = self.auth.team(principal, team, Action.READ)
        if status is not None and status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}", field="status")
        sort_metric, descending = None, True
        if sort:
            parts = sort.split(":")
            if parts[0] != "metric" or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("asc", "desc")):
                raise Invalid("sort must look like metric:<key> or metric:<key>:asc|desc", field="sort")
            sort_metric, descending = parts[1], (parts[2] if len(parts) == 3 else "desc") == "desc"
        with self.pool.connection() as conn:
            runs = repo.list_runs(conn, owner.id, project=project, status=status, q=q, sort_metric=sort_metric,
                                  descending=descending, limit=max(1, min(limit, 1000)))
            last = repo.last_metrics(conn, [r.id for r in runs])
        return [Run(**{**r.__dict__, "metrics": last.get(r.id, {})}) for r in runs]

    def projects(self, principal: Principal, team: str) -> list[dict]:
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            return repo.projects(conn, owner.id)

    def update(self, principal: Principal, run_id: str, body: Any) -> Run:
        run = self._writable(principal, run_id)
        body = _check_json_object(body, "body")
        unknown = sorted(set(body) - {"status", "name", "tags"})
        if unknown:
            raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
        status = body.get("status")
        if status is not None and status not in STATUSES:
            raise Invalid(f"status must be one of {', '.join(STATUSES)}", field="status")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
            raise Invalid("name must be 1-100 letters, digits, spaces, '.', '_' or '-'", field="name")
        tags = _check_json_object(body["tags"], "tags") if "tags" in body else None
        with self.pool.connection() as conn:
            repo.update_run(conn, run.id, status=status, name=name, tags=tags)
        return self.get(principal, run.id)

    def log_params(self, principal: Principal, run_id: str, params: Any) -> Run:
        run = self._writable(principal, run_id)
        with self.pool.connection() as conn:
            repo.update_run(conn, run.id, params=_check_json_object(params, "params"))
        return self.get(principal, run.id)

    def log_system(self, principal: Principal, run_id: str, system: Any) -> None:
        run = self._writable(principal, run_id)
        with self.pool.connection() as conn:
            repo.update_run(conn, run.id, system=_check_json_object(system, "system", 64 * 1024))

    # -- metrics ---------------------------------------------------------------------------------------
    def log_metrics(self, principal: Principal, run_id: str, points: Any) -> dict[str, int]:
        """Store up to 10,000 points; a point already stored for (key, step) is ignored. Returns counts."""
        run = self._writable(principal, run_id)
        if not isinstance(points, list) or not points:
            raise Invalid("metrics must be a non-empty list of {key, value, step}", field="metrics")
        if len(points) > MAX_POINTS_PER_CALL:
            raise Invalid(f"send at most {MAX_POINTS_PER_CALL} points per call", field="metrics")
        now = datetime.now(timezone.utc)
        rows = []
        for i, p in enumerate(points):
            if not isinstance(p, dict) or set(p) - {"key", "value", "step", "ts"}:
                raise Invalid(f"metrics[{i}] must be {{key, value, step, ts?}}", field="metrics", index=i)
            key, value, step = p.get("key"), p.get("value"), p.get("step")
            if not isinstance(key, str) or not _KEY.fullmatch(key):
                raise Invalid(f"metrics[{i}]: key {key!r} must be 1-250 letters, digits, spaces or _-./:",
                              field="metrics", index=i)
            if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**62:
                raise Invalid(f"metrics[{i}] ({key}): step must be a non-negative integer", field="metrics", index=i)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise Invalid(f"metrics[{i}] ({key} at step {step}): value must be a finite number, not {value!r}",
                              field="metrics", index=i, key=key, step=step)
            ts = p.get("ts")
            if ts is None:
                when = now
            elif isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts) and 0 < ts < 1e11:
                when = datetime.fromtimestamp(ts, timezone.utc)
            else:
                raise Invalid(f"metrics[{i}] ({key}): ts must be seconds since the epoch", field="metrics", index=i)
            rows.append((key, step, float(value), when))
        with self.pool.connection() as conn, conn.transaction():
            stored = repo.insert_metrics(conn, run.id, rows)
        return {"received": len(rows), "stored": stored}

    def metrics(self, principal: Principal, run_id: str) -> dict[str, dict]:
        """Each metric's last value and step, min, max and count."""
        run = self._readable(principal, run_id)
        with self.pool.connection() as conn:
            return repo.metric_summaries(conn, run.id)

    def history(self, principal: Principal, run_id: str, key: str, *, max_points: int = 1000,
                min_step: int | None = None, max_step: int | None = None) -> dict[str, Any]:
        """Points ``[step, value, ts]`` of one metric in ``min_step..max_step``; above ``max_points``,
        each of at most ``max_points // 2`` step buckets keeps its lowest and highest point."""
        run = self._readable(principal, run_id)
        if not 2 <= max_points <= MAX_HISTORY_POINTS:
            raise Invalid(f"max_points must be between 2 and {MAX_HISTORY_POINTS}", field="max_points")
        for label, value in (("min_step", min_step), ("max_step", max_step)):
            if value is not None and not 0 <= value < 2**62:
                raise Invalid(f"{label} must be a step (a non-negative integer below 2^62)", field=label)
        with self.pool.connection() as conn:
            points, total, downsampled = repo.history(conn, run.id, key, min_step=min_step, max_step=max_step,
                                                      max_points=max_points)
            if total == 0 and key not in repo.metric_summaries(conn, run.id):
                raise NotFound(f"run {run.id} has no metric {key!r}")
        return {"key": key, "points": points, "total": total, "downsampled": downsampled}

    # -- artifacts and checkpoints ---------------------------------------------------------------------
    def put_artifact(self, principal: Principal, run_id: str, path: str, data: bytes, *, kind: str = "artifact",
                     meta: Any = None) -> Artifact:
        run = self._writable(principal, run_id)
        path = validate_relpath(path, field_name="path")
        if kind not in ARTIFACT_KINDS:
            raise Invalid(f"kind must be one of {', '.join(ARTIFACT_KINDS)}", field="kind")
        meta = _check_json_object(meta or {}, "meta", 64 * 1024)
        with self.pool.connection() as conn, conn.transaction():
            sha = self._store(conn, data)
            repo.upsert_artifact(conn, run.id, path, kind, sha, len(data), meta)
            return repo.artifacts(conn, run.id, path)[0]

    def artifacts(self, principal: Principal, run_id: str) -> list[Artifact]:
        run = self._readable(principal, run_id)
        with self.pool.connection() as conn:
            return repo.artifacts(conn, run.id)

    def open_artifact(self, principal: Principal, run_id: str, path: str) -> tuple[Artifact, Iterator[bytes]]:
        """One artifact as (its record, an iterator of byte chunks) for streaming."""
        run = self._readable(principal, run_id)
        with self.pool.connection() as conn:
            match = next(iter(repo.artifacts(conn, run.id, path)), None)
        if match is None:
            raise NotFound(f"run {run.id} has no artifact {path!r}")
        return match, self._chunks(match.sha256)

    def put_checkpoint(self, principal: Principal, run_id: str, step: int, data: bytes, *,
                       fmt: str = "bytes") -> Checkpoint:
        """Store a checkpoint's bytes, then record it: a checkpoint counts only once fully written."""
        run = self._writable(principal, run_id)
        if not data:
            raise Invalid("a checkpoint cannot be empty", field="body")
        if fmt not in CHECKPOINT_FORMATS:
            raise Invalid(f"format must be one of {', '.join(CHECKPOINT_FORMATS)}", field="format")
        if not 0 <= step < 2**62:
            raise Invalid("step must be a non-negative integer", field="step")
        attempt = principal.scope.get("attempt") if isinstance(principal.scope.get("attempt"), int) else None
        with self.pool.connection() as conn, conn.transaction():
            sha = self._store(conn, data)
            repo.insert_checkpoint(conn, run.id, step, sha, len(data), attempt, fmt)
            return repo.checkpoint(conn, run.id, step)

    def checkpoints(self, principal: Principal, run_id: str) -> list[Checkpoint]:
        run = self._readable(principal, run_id)
        with self.pool.connection() as conn:
            return repo.checkpoints(conn, run.id)

    def open_checkpoint(self, principal: Principal, run_id: str, step: str) -> tuple[Checkpoint, Iterator[bytes]]:
        """A checkpoint by step, or the latest (``"latest"``), as (its record, an iterator of byte chunks)."""
        run = self._readable(principal, run_id)
        if step != "latest" and not (step.isdigit() and int(step) < 2**62):
            raise Invalid("step must be a number or 'latest'", field="step")
        with self.pool.connection() as conn:
            match = repo.checkpoint(conn, run.id, None if step == "latest" else int(step))
        if match is None:
            raise NotFound(f"run {run.id} has no checkpoint yet" if step == "latest"
                           else f"run {run.id} has no checkpoint at step {step}")
        return match, self._chunks(match.sha256)

    def lineage(self, principal: Principal, run_id: str) -> list[dict]:
        run = self._readable(principal, run_id)
        with self.pool.connection() as conn:
            return repo.run_lineage(conn, run.id)

    # -- helpers ---------------------------------------------------------------------------------------
    def _readable(self, principal: Principal, run_id: str) -> Run:
        """The run (without its last metric values), if the caller may read its team."""
        with self.pool.connection() as conn:
            run = repo.get_run(conn, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found")
        self.auth.team(principal, run.team, Action.READ)
        return run

    def _writable(self, principal: Principal, run_id: str) -> Run:
        """The run, if the caller may write to it: its own run token, or write access to its team."""
        with self.pool.connection() as conn:
            run = repo.get_run(conn, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found")
        scoped = principal.scope.get("run")
        if scoped is not None:
            self.auth.team(principal, run.team, Action.READ)
            if scoped != run.id:
                raise Forbidden(f"this token belongs to run {scoped}; it may write only to that run")
        else:
            self.auth.team(principal, run.team, Action.WRITE)
        return run

    def _chunks(self, sha256: str) -> Iterator[bytes]:
        """A blob's bytes in chunks, fetched as the response is sent (a client checks the sha256)."""
        response = self.blobs.store.open(blob_key(sha256))

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(1 << 20)
            finally:
                response.close()
                response.release_conn()

        return chunks()

    def _store(self, conn, data: bytes) -> str:
        """Put bytes in the blob store inside ``conn``'s transaction, holding the GC lock shared."""
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (GC_LOCK,))
        sha = sha256_bytes(data)
        if not self.blobs.exists(sha):
            self.blobs.store.put_bytes(blob_key(sha), data)
        return sha
