"""Prediction logging off the response path: a bounded queue drained by one thread with COPY.

``offer`` never blocks: when the queue is full the record is dropped and counted (``dropped``),
so a slow or unreachable database costs log rows, never request latency. The writer takes up
to ``batch_rows`` records at a time and COPYs them into ``prediction_logs``; JSON encoding of
inputs and outputs happens there too, not in the request thread.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

COLUMNS = "deployment_id, version_id, shadow, request_id, at, latency_ms, inputs, outputs"


@dataclass(frozen=True)
class LogRecord:
    """One logged prediction; ``outputs`` is ``{"predictions": [...], "outputs": ndarray | list}``."""

    deployment_id: str
    version_id: str
    shadow: bool
    request_id: str
    at: datetime
    latency_ms: float
    inputs: Any
    outputs: dict


def _default(obj: Any) -> Any:
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def _scrub(value: Any) -> Any:
    """``value`` as plain JSON types with NaN and infinities as null."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=_default, allow_nan=False)
    except ValueError:  # NaN or infinity somewhere: JSON (and jsonb) has neither
        return json.dumps(_scrub(value), default=_default)


class PredictionLog:
    """A bounded queue of ``LogRecord`` and the thread that writes them to ``prediction_logs``."""

    def __init__(self, pool: ConnectionPool, *, capacity: int = 10_000, batch_rows: int = 500,
                 flush_s: float = 0.2):
        self.pool = pool
        self.batch_rows = batch_rows
        self.flush_s = flush_s
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def offer(self, record: LogRecord) -> bool:
        """Queue a record unless the queue is full (then drop and count it); never blocks."""
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``) and stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    def _take(self) -> list[LogRecord]:
        """The records of one write: from the first one, whatever comes within ``flush_s`` (up to
        ``batch_rows``), so a busy server writes a few large COPYs a second rather than many small ones."""
        try:
            records = [self._queue.get(timeout=self.flush_s)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.flush_s
        while len(records) < self.batch_rows and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                records.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        while len(records) < self.batch_rows:  # (and what is already queued)
            try:
                records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return records

    def _run(self) -> None:
        while True:
            records = self._take()
            if records:
                self._write(records)
            elif self._stop.is_set():
                return

    def _write(self, records: list[LogRecord]) -> None:
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                # a crash may lose the last fraction of a second of logs; no request waits on the disk for them
                cur.execute("SET LOCAL synchronous_commit = off")
                with cur.copy(f"COPY prediction_logs ({COLUMNS}) FROM STDIN") as copy:
                    for r in records:
                        copy.write_row((r.deployment_id, r.version_id, r.shadow, r.request_id, r.at,
                                        r.latency_ms, _json(r.inputs), _json(r.outputs)))
            self.written += len(records)
        except Exception:  # noqa: BLE001 - a logging failure must never reach requests
            self.dropped += len(records)
            logger.warning("could not write %d prediction log rows; dropped", len(records), exc_info=True)
