"""Records of jobs: the job row, its events and its log lines."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ACTIVE = ("queued", "admitted", "running", "retrying")
ENDED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Job:
    id: str
    team_id: int
    team: str
    name: str
    project: str
    spec: dict
    queue: str
    priority: int
    state: str
    attempt: int
    max_retries: int
    timeout_s: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    reason: str
    exit_code: int | None
    run_id: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    gpus: int = 0
    worker: str | None = None               # where the scheduler placed it (GPU jobs)
    gpu_indices: list[int] | None = None    # its GPUs on that worker (CUDA_VISIBLE_DEVICES)
    preempt_reason: str | None = None       # set: the scheduler asked it to checkpoint and yield
    preemptions: int = 0                    # attempts that ended without failing

    @property
    def ended(self) -> bool:
        return self.state in ENDED


@dataclass(frozen=True)
class JobEvent:
    at: datetime
    from_state: str | None
    to_state: str
    attempt: int
    reason: str
    detail: dict


@dataclass(frozen=True)
class LogLine:
    seq: int
    attempt: int
    stream: str
    at: datetime
    line: str
