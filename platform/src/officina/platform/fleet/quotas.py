"""Team quotas set by admins (every change audited), current usage, and the checks made at submit."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from officina.platform.auth import repo as auth_repo
from officina.platform.auth.access import require_site_admin
from officina.platform.auth.entities import Action, Principal
from officina.platform.auth.service import AuthService
from officina.platform.errors import Forbidden, Invalid
from officina.platform.jobs.spec import PRIORITIES
from officina.platform.scheduler.service import CHANNEL

MAX_GPUS = 10_000
MAX_GPU_HOURS = 1_000_000.0
FIELDS = ("max_gpus", "gpu_hours_per_week", "max_priority", "weight")


@dataclass(frozen=True)
class Quota:
    team: str
    max_gpus: int | None          # None: no cap
    gpu_hours_per_week: float | None
    max_priority: str
    weight: float
    gpus_in_use: int = 0
    gpu_hours_this_week: float = 0.0


def _read(conn, team_id: int, team: str) -> Quota:
    row = conn.execute("SELECT max_gpus, gpu_hours_per_week, max_priority, weight FROM team_quotas"
                       " WHERE team_id = %s", (team_id,)).fetchone()
    in_use, hours = conn.execute(
        "SELECT (SELECT count(*) FROM gpu_leases WHERE team_id = %(t)s),"
        " ((SELECT coalesce(sum(extract(epoch FROM until - greatest(since, date_trunc('week', now())))), 0)"
        "   FROM gpu_usage WHERE team_id = %(t)s AND until > date_trunc('week', now()))"
        " + (SELECT coalesce(sum(extract(epoch FROM now() - greatest(since, date_trunc('week', now())))), 0)"
        "   FROM gpu_leases WHERE team_id = %(t)s)) / 3600.0", {"t": team_id}).fetchone()
    values = row or (None, None, "high", 1.0)
    return Quota(team, values[0], values[1], values[2], values[3], int(in_use), float(hours))


def _check(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
    out: dict[str, Any] = {}
    if "max_gpus" in fields:
        v = fields["max_gpus"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_GPUS):
            raise Invalid(f"max_gpus must be a whole number from 0 to {MAX_GPUS} (or null for no cap), not {v!r}",
                          field="max_gpus")
        out["max_gpus"] = v
    if "gpu_hours_per_week" in fields:
        v = fields["gpu_hours_per_week"]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or not 0 <= v <= MAX_GPU_HOURS):
            raise Invalid(f"gpu_hours_per_week must be a number from 0 to {MAX_GPU_HOURS:g} (or null), not {v!r}",
                          field="gpu_hours_per_week")
        out["gpu_hours_per_week"] = None if v is None else float(v)
    if "max_priority" in fields:
        if fields["max_priority"] not in PRIORITIES:
            raise Invalid(f"max_priority must be one of {', '.join(PRIORITIES)}", field="max_priority")
        out["max_priority"] = fields["max_priority"]
    if "weight" in fields:
        v = fields["weight"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 1000:
            raise Invalid(f"weight must be a number above 0 and at most 1000, not {v!r}", field="weight")
        out["weight"] = float(v)
    if not out:
        raise Invalid(f"give at least one of {', '.join(FIELDS)}", field="body")
    return out


class QuotaService:
    """Quotas of teams: read by their members, set by site admins."""

    def __init__(self, pool: ConnectionPool, auth: AuthService):
        self.pool, self.auth = pool, auth

    def get(self, principal: Principal, team: str) -> Quota:
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn:
            return _read(conn, owner.id, owner.name)

    def list(self, principal: Principal) -> list[Quota]:
        """Every team's quota and usage (admins see all teams, others their own)."""
        teams = self.auth.list_teams(principal)
        with self.pool.connection() as conn:
            return [_read(conn, t.id, t.name) for t in teams]

    def set(self, principal: Principal, team: str, fields: Any) -> Quota:
        """Change a team's quota (site admins only); the audit log keeps who, when, old → new."""
        require_site_admin(principal)
        if not isinstance(fields, dict):
            raise Invalid("send a JSON object of quota fields", field="body")
        changes = _check(fields)
        owner = self.auth.team(principal, team, Action.READ)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (owner.id,))
            old = _read(conn, owner.id, owner.name)
            new = {k: getattr(old, k) for k in FIELDS} | changes
            conn.execute("INSERT INTO team_quotas (team_id, max_gpus, gpu_hours_per_week, max_priority, weight,"
                         " updated_by) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (team_id) DO UPDATE SET"
                         " max_gpus = EXCLUDED.max_gpus, gpu_hours_per_week = EXCLUDED.gpu_hours_per_week,"
                         " max_priority = EXCLUDED.max_priority, weight = EXCLUDED.weight,"
                         " updated_by = EXCLUDED.updated_by, updated_at = now()",
                         (owner.id, new["max_gpus"], new["gpu_hours_per_week"], new["max_priority"], new["weight"],
                          principal.user.id))
            auth_repo.insert_audit(conn, actor_id=principal.user.id, action="quota.set", target=f"team:{team}",
                                   detail={"old": {k: getattr(old, k) for k in FIELDS}, "new": new})
            conn.execute(f"NOTIFY {CHANNEL}")  # jobs waiting on the old quota may start now
            return _read(conn, owner.id, owner.name)

    def check_submit(self, conn, team_id: int, team: str, priority: int, gpus: int) -> None:
        """Refuse at submit what can never run: a priority above the team's cap, more GPUs than any worker has.

        Raises:
            Forbidden: the priority is above the team's cap.
            Invalid: no online worker has that many GPUs (the message names the largest).
        """
        quota = _read(conn, team_id, team)
        if priority > PRIORITIES[quota.max_priority]:
            name = next(k for k, v in PRIORITIES.items() if v == priority)
            raise Forbidden(f"team {team!r} may submit jobs up to priority {quota.max_priority}, not {name}",
                            field="priority")
        if gpus:
            largest = conn.execute("SELECT coalesce(max(jsonb_array_length(gpus)), 0) FROM workers"
                                   " WHERE status = 'online'").fetchone()[0]
            if gpus > largest:
                raise Invalid(f"no worker has {gpus} GPUs: the largest online worker has {largest}", field="gpus",
                              largest=largest)
