"""Dynamic batching: concurrent submits merge into fewer predict calls, each caller gets its own rows."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from officina.workers.serving.batcher import Batcher


class SlowDouble:
    """A predictor that doubles its input and records every batch it was given."""

    runtime = "fake"

    def __init__(self, delay: float = 0.005):
        self.delay, self.calls, self.lock = delay, [], threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls.append(len(batch))
        time.sleep(self.delay)  # like a real model: time per call, not per row
        return batch * 2


def test_concurrent_submits_are_merged_and_split_back():
    model = SlowDouble()
    batcher = Batcher(model, max_batch_size=32, max_wait_ms=5)
    requests = [np.full((1 + i % 3, 4), i, np.float32) for i in range(200)]
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(batcher.predict, requests))
    for rows, out in zip(requests, results):
        assert out.shape == rows.shape and np.array_equal(out, rows * 2)
    assert sum(model.calls) == sum(len(r) for r in requests)
    assert len(model.calls) < len(requests) / 3, model.calls
    assert max(model.calls) <= 32
    batcher.close()


def test_alone_a_request_waits_at_most_max_wait():
    batcher = Batcher(SlowDouble(delay=0), max_batch_size=32, max_wait_ms=20)
    start = time.perf_counter()
    assert batcher.predict(np.ones((1, 2), np.float32)).tolist() == [[2.0, 2.0]]
    assert time.perf_counter() - start < 0.5
    batcher.close()


def test_oversized_request_runs_alone_and_errors_reach_every_caller():
    model = SlowDouble(delay=0)
    batcher = Batcher(model, max_batch_size=4, max_wait_ms=1)
    assert batcher.predict(np.ones((10, 2), np.float32)).shape == (10, 2)
    assert model.calls == [10]

    class Broken:
        runtime = "fake"

        def predict(self, batch):
            raise RuntimeError("boom")

    broken = Batcher(Broken(), max_batch_size=8, max_wait_ms=5)
    futures = [broken.submit(np.ones((1, 2), np.float32)) for _ in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="boom"):
            future.result(5)
    batcher.close()
    broken.close()


def test_close_drains_queue_and_late_submits_still_answer():
    model = SlowDouble(delay=0.02)
    batcher = Batcher(model, max_batch_size=2, max_wait_ms=1)
    futures = [batcher.submit(np.full((1, 1), i, np.float32)) for i in range(6)]
    batcher.close()
    late = batcher.submit(np.full((1, 1), 7, np.float32))
    assert [f.result(5).item() for f in futures] == [0, 2, 4, 6, 8, 10]
    assert late.result(5).item() == 14
    batcher.join(5)
    assert not batcher._thread.is_alive()


def test_real_onnx_model_batches():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import io

    from officina.workers.models.runtime import load

    net = torch.nn.Sequential(torch.nn.Linear(8, 4))
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(2, 8),), buf, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    batcher = Batcher(load("onnx", buf.getvalue()), max_batch_size=16, max_wait_ms=5)
    rows = [np.random.default_rng(i).normal(size=(1, 8)).astype(np.float32) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(batcher.predict, rows))
    with torch.no_grad():
        for x, out in zip(rows, outs):
            assert np.allclose(out, net(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert batcher.batches < 40
    batcher.close()


def test_with_a_busy_count_a_batch_waits_only_for_requests_in_progress():
    model = SlowDouble(delay=0)
    in_progress = [1]
    batcher = Batcher(model, max_batch_size=32, max_wait_ms=10_000, busy=lambda: in_progress[0])
    # alone: served at once, though the wait allowed is 10 s
    assert batcher.predict(np.ones((1, 2), np.float32), timeout=5).shape == (1, 2)
    # two in progress: the first waits for the second, and both go in one batch
    in_progress[0] = 2
    first = batcher.submit(np.ones((1, 2), np.float32))
    time.sleep(0.05)
    assert not first.done()
    second = batcher.submit(np.zeros((2, 2), np.float32))
    assert first.result(5).shape == (1, 2) and second.result(5).shape == (2, 2)
    assert model.calls == [1, 3]
    batcher.close()
