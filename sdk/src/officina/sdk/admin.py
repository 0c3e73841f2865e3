"""Administration: ``sdk.admin.set_quota(team, gpus=4, gpu_hours_per_week=…)`` (site admins only)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from officina import sdk

_UNSET: Any = object()


def set_quota(team: str, *, gpus: int | None = _UNSET, gpu_hours_per_week: float | None = _UNSET,
              max_priority: str = _UNSET, weight: float = _UNSET) -> dict[str, Any]:
    """Change a team's quota; ``None`` removes a cap. Only the fields given change (audited server-side)."""
    body = {k: v for k, v in (("max_gpus", gpus), ("gpu_hours_per_week", gpu_hours_per_week),
                              ("max_priority", max_priority), ("weight", weight)) if v is not _UNSET}
    return sdk.client().put(f"/teams/{quote(team, safe='')}/quota", body)["quota"]


def quota(team: str) -> dict[str, Any]:
    """A team's quota and current usage (GPUs in use, GPU-hours this week)."""
    return sdk.client().get(f"/teams/{quote(team, safe='')}/quota")["quota"]


def quotas() -> list[dict[str, Any]]:
    """Quotas and usage of every team you can see (all teams for admins)."""
    return sdk.client().get("/quotas")["quotas"]


def workers(include_stopped: bool = False) -> list[dict[str, Any]]:
    """The worker fleet: queues, CPUs, memory, GPUs (real or simulated, each with its holder), status
    and last heartbeat."""
    return sdk.client().get("/fleet/workers" + ("?all=1" if include_stopped else ""))["workers"]


def queue(limit: int = 500) -> list[dict[str, Any]]:
    """Active jobs you can see (every team's for admins): running first, then queued in scheduling
    order, each with its waiting reason (``"waiting: team quota 4/4 GPUs in use"``), worker and GPUs."""
    return sdk.client().get(f"/scheduler/queue?limit={int(limit)}")["jobs"]


def scheduler() -> dict[str, Any]:
    """The scheduler's leader and its last pass (queued, placed, waiting, preempted, free GPUs, ms)."""
    return sdk.client().get("/scheduler")["scheduler"]
