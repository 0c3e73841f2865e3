"""Workers register what they offer and heartbeat; the sweep marks silent ones lost."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from officina.platform.auth.entities import Principal
from officina.platform.scheduler.service import CHANNEL

HEARTBEAT_S = 5.0


def heartbeat_every(lost_after_s: float) -> float:
    """How often a worker heartbeats so that missing two beats is still short of being lost."""
    return max(0.5, min(HEARTBEAT_S, lost_after_s / 3))


@dataclass(frozen=True)
class Worker:
    name: str
    host: str
    pid: int
    queues: list[str]
    cpus: int
    memory_mb: int
    gpus: list
    status: str
    started_at: datetime
    last_heartbeat: datetime

    @property
    def simulated(self) -> bool:
        return any(g.get("simulated") for g in self.gpus)


class FleetService:
    """The fleet as Postgres knows it."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def register(self, name: str, queues: list[str], gpus: list[dict[str, Any]], info: dict[str, Any]) -> None:
        """A worker starting (or restarting) announces itself as online."""
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO workers (name, host, pid, queues, cpus, memory_mb, gpus, status)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, 'online') ON CONFLICT (name) DO UPDATE SET"
                " host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues, cpus = EXCLUDED.cpus,"
                " memory_mb = EXCLUDED.memory_mb, gpus = EXCLUDED.gpus, status = 'online', started_at = now(),"
                " last_heartbeat = now()",
                (name, info["host"], info["pid"], queues, info["cpus"], info["memory_mb"], Jsonb(gpus)))
            conn.execute(f"NOTIFY {CHANNEL}")

    def heartbeat(self, name: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE workers SET last_heartbeat = now(), status = 'online' WHERE name = %s", (name,))

    def stopped(self, name: str) -> None:
        with self.pool.connection() as conn:
            conn.execute("UPDATE workers SET status = 'stopped' WHERE name = %s", (name,))
            conn.execute(f"NOTIFY {CHANNEL}")

    def mark_lost(self, older_than_s: float) -> list[str]:
        """Online workers silent for longer than ``older_than_s`` become lost; return their names."""
        with self.pool.connection() as conn:
            lost = [r[0] for r in conn.execute(
                "UPDATE workers SET status = 'lost' WHERE status = 'online'"
                " AND last_heartbeat < now() - make_interval(secs => %s) RETURNING name", (older_than_s,))]
            if lost:
                conn.execute(f"NOTIFY {CHANNEL}")
            return lost

    def list(self, principal: Principal, *, include_stopped: bool = False) -> list[Worker]:
        """Every worker (any signed-in user may see the fleet); online first."""
        del principal  # the fleet is shared: seeing it needs only a signed-in user
        sql = ("SELECT name, host, pid, queues, cpus, memory_mb, gpus, status, started_at, last_heartbeat"
               " FROM workers")
        if not include_stopped:
            sql += " WHERE status <> 'stopped'"
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(Worker)) as cur:
            return cur.execute(sql + " ORDER BY status = 'online' DESC, name").fetchall()
