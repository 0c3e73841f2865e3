"""Records of experiment tracking."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Run:
    id: str
    team_id: int
    team: str
    project: str
    name: str
    job_id: str | None
    status: str
    params: dict
    tags: dict
    git: dict | None
    system: dict
    created_by: int | None
    created_at: datetime
    ended_at: datetime | None
    updated_at: datetime
    metrics: dict = field(default_factory=dict)  # key -> last value (in listings)


@dataclass(frozen=True)
class Artifact:
    path: str
    kind: str
    sha256: str
    size: int
    meta: dict
    created_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    step: int
    sha256: str
    size: int
    attempt: int | None
    format: str  # 'bytes' (stored as given) or 'torch' (torch.save; load with weights_only=True)
    created_at: datetime
