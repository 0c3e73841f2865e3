"""Health of each component an installation needs: database, S3, broker, workers."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

from celery import Celery
from psycopg_pool import ConnectionPool

from officina.platform.storage import ObjectStore
from officina.platform.tasks import PING

logger = logging.getLogger(__name__)


@dataclass
class ComponentHealth:
    ok: bool
    detail: str
    latency_ms: float


def _timed(check: Callable[[], str]) -> ComponentHealth:
    start = time.perf_counter()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # a health check reports any failure rather than raising it
        detail = f"{type(exc).__name__}: {exc}"[:300]
        ok = False
    return ComponentHealth(ok, detail, round((time.perf_counter() - start) * 1000, 1))


def check_database(pool: ConnectionPool) -> str:
    with pool.connection(timeout=3) as conn:
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    return f"schema version {version}"


def check_s3(store: ObjectStore) -> str:
    store.ping()
    return f"bucket {store.bucket} reachable"


def check_broker(celery: Celery) -> str:
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        conn.default_channel.client.ping()
    return "reachable"


def check_workers(celery: Celery, timeout: float = 3.0) -> str:
    """Round-trip the ping task; when workers are busy, fall back to the control-channel ping."""
    result = celery.send_task(PING, queue="cpu")
    try:
        reply = result.get(timeout=timeout)
        return f"ping answered by {reply.get('worker', 'a worker')}"
    except Exception as exc:
        answered = celery.control.ping(timeout=1.0) or []
        if answered:
            names = sorted(name for entry in answered for name in entry)
            return f"{len(names)} worker(s) online, none idle to answer the ping task"
        raise RuntimeError(f"no worker answered ({type(exc).__name__})") from None
    finally:
        # Stop listening for the reply now, while the broker answers, not later in __del__.
        try:
            result.backend.remove_pending_result(result)
        except Exception:  # the broker went away: nothing left to cancel
            pass
        result.backend = None


def check_all(pool: ConnectionPool, store: ObjectStore, celery: Celery) -> dict[str, dict]:
    """Every component's health; db, S3 and broker in parallel, workers once the broker answers."""
    with ThreadPoolExecutor(max_workers=3) as executor:
        db = executor.submit(_timed, lambda: check_database(pool))
        s3 = executor.submit(_timed, lambda: check_s3(store))
        broker = _timed(lambda: check_broker(celery))
        if broker.ok:
            workers = _timed(lambda: check_workers(celery))
        else:
            workers = ComponentHealth(False, "unknown: the broker is unreachable", 0.0)
        return {"db": asdict(db.result()), "s3": asdict(s3.result()), "broker": asdict(broker),
                "workers": asdict(workers)}
