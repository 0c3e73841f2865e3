"""The scheduler process: ``python -m officina.workers.scheduler`` (``officina up`` starts it).

Any number may run; one leads. Leadership is a session advisory lock held on a dedicated
connection: when the leader dies its connection closes, the lock is released, and a standby that
polls for it takes over within a second. The leader LISTENs for wake-ups (submits, finishes,
quota and fleet changes) and otherwise runs a pass every ``scheduler_interval_s``. Passes are
serialised by their own transaction lock, so even a leader that lost its lock without noticing
cannot dispatch a job twice.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import psycopg

from officina.platform.scheduler.service import CHANNEL, LEADER_LOCK, Scheduler
from officina.platform.services import Services
from officina.platform.settings import Settings, with_secrets

logger = logging.getLogger("officina.scheduler")

STANDBY_POLL_S = 0.5


class Leader:
    """Runs passes while it holds the leader lock; a standby until then."""

    def __init__(self, scheduler: Scheduler, database_url: str, interval_s: float, name: str | None = None):
        self.scheduler, self.database_url, self.interval_s = scheduler, database_url, interval_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
                    if conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()[0]:
                        self._lead(conn)
            except psycopg.Error:
                logger.warning("scheduler %s lost its database connection; standing by", self.name, exc_info=True)
            self.stop.wait(STANDBY_POLL_S)

    def _lead(self, conn) -> None:
        conn.execute(f"LISTEN {CHANNEL}")
        conn.execute("UPDATE scheduler_state SET leader = %s, leader_since = now()", (self.name,))
        logger.info("scheduler %s is the leader", self.name)
        while not self.stop.is_set():
            try:
                self.scheduler.run_pass()
            except Exception:  # a bad pass must not end leadership; the next one tries again
                logger.exception("scheduling pass failed")
            # wait for a wake-up (or the interval), then take every queued notification at once
            deadline = time.monotonic() + self.interval_s
            for _ in conn.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1):
                pass
            while not self.stop.is_set() and any(True for _ in conn.notifies(timeout=0.05, stop_after=1)):
                pass
        conn.execute("UPDATE scheduler_state SET leader = NULL WHERE leader = %s", (self.name,))


def main() -> None:
    settings = with_secrets(Settings())
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from officina.workers.app import app  # the Celery app sends the dispatch messages

    services = Services.open(settings, pool_size=2, celery=app)
    leader = Leader(services.scheduler, settings.database_url, settings.scheduler_interval_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: leader.stop.set())
    print(f"officina scheduler {leader.name} started (standby until it holds the leader lock)", flush=True)
    try:
        leader.run()
    finally:
        services.close()


if __name__ == "__main__":
    main()
