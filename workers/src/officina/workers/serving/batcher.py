"""Dynamic batching: requests for one loaded model are merged into one ``predict`` call.

One thread per batcher takes the first waiting request, then keeps collecting until the batch
holds ``max_batch_size`` rows or ``max_wait_ms`` has passed since that first request, runs one
predict on the concatenated rows and hands each caller its own slice through a future. Under
load, batches fill at once (no wait). With ``busy`` (the server's count of requests in progress) a
batch waits for more only while other requests are in progress: a lone request never waits.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from officina.workers.models.runtime import Predictor

logger = logging.getLogger(__name__)

_STOP = object()


class InFlight:
    """Requests being served right now: the server enters and leaves it around each prediction."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> "InFlight":
        with self._lock:
            self._count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._count -= 1

    def value(self) -> int:
        return self._count


IN_FLIGHT = InFlight()


class Batcher:
    """Merges concurrent ``submit`` calls into batched ``predictor.predict`` calls."""

    def __init__(self, predictor: Predictor, *, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 name: str = "model", busy: Callable[[], int] | None = None):
        self.predictor = predictor
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self.name = name
        self.busy = busy
        self.batches = 0  # predict calls made (tests and /healthz read it)
        self.rows = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, rows: np.ndarray) -> Future:
        """Queue a batch of rows; the future resolves to the model's outputs for exactly these rows.

        After ``close`` the rows are predicted in the calling thread: nothing submitted is ever dropped.
        """
        future: Future = Future()
        with self._lock:
            if not self._closed:
                self._queue.put((rows, future))
                return future
        try:
            future.set_result(self.predictor.predict(rows))
        except Exception as exc:  # noqa: BLE001 - the caller's future carries the error
            future.set_exception(exc)
        return future

    def predict(self, rows: np.ndarray, timeout: float | None = None) -> np.ndarray:
        """``submit`` and wait for the outputs."""
        return self.submit(rows).result(timeout)

    def close(self) -> None:
        """Stop the thread once everything already queued has been predicted."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the batching thread ------------------------------------------------------------------
    def _run(self) -> None:
        carry = None
        stopping = False  # _STOP was taken: nothing can follow it in the queue
        while True:
            if carry is not None:
                item, carry = carry, None
            elif stopping:
                return
            else:
                item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            size = len(item[0])
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch_size and not stopping:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    if self.busy is not None and self.busy() <= len(batch):
                        break  # nobody else is being served: no one to wait for
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if nxt is _STOP:
                    stopping = True
                    break
                if size + len(nxt[0]) > self.max_batch_size:
                    carry = nxt  # starts the next batch
                    break
                batch.append(nxt)
                size += len(nxt[0])
            self._predict(batch, size)

    def _predict(self, batch: list, size: int) -> None:
        self.batches += 1
        self.rows += size
        try:
            if len(batch) == 1:
                outputs = self.predictor.predict(batch[0][0])
            else:
                outputs = self.predictor.predict(np.concatenate([rows for rows, _ in batch]))
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
            logger.warning("batch predict failed model=%s rows=%d: %s", self.name, size, exc)
            for _, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for rows, future in batch:
            end = start + len(rows)
            future.set_result(outputs[start:end])
            start = end
