"""The worker fleet on the real stack: registration, simulated GPUs, heartbeats, lost and stopped workers."""
from __future__ import annotations

import os
import signal
import time

from checks import assert_error


def _workers(api, everything: bool = False) -> dict[str, dict]:
    body = api.get("/fleet/workers" + ("?all=1" if everything else "")).get_json()
    return {w["name"]: w for w in body["workers"]}


def _wait(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("condition not reached in time")


def test_workers_register_heartbeat_and_get_lost_or_stopped(api, anon_api, live_stack):
    from officina.infra.processes import PROCESS_TYPES

    worker = _wait(lambda: next((w for w in _workers(api).values() if w["status"] == "online"), None))
    assert {"cpu", "gpu", "io"} <= set(worker["queues"]) and worker["cpus"] >= 1 and worker["memory_mb"] > 0
    assert worker["gpus"] == [] and worker["simulated"] is False
    assert_error(anon_api.get("/fleet/workers"), 401, "unauthenticated")

    # a second worker declaring 2 simulated GPUs, as OFFICINA_WORKER_SIMULATED_GPUS=2 would
    settings = live_stack.settings.model_copy(update={"worker_simulated_gpus": 2, "worker_queues": "gpu"})
    child = live_stack.stack.supervisor.start(PROCESS_TYPES["worker"](settings, 7))
    name = _wait(lambda: next((n for n, w in _workers(api).items() if n.startswith("worker7@")), None))
    sim = _workers(api)[name]
    assert sim["queues"] == ["gpu"] and sim["simulated"] is True
    assert [(g["index"], g["simulated"]) for g in sim["gpus"]] == [(0, True), (1, True)]
    first_beat = sim["last_heartbeat"]
    _wait(lambda: _workers(api)[name]["last_heartbeat"] != first_beat, timeout=20)  # it heartbeats

    # kill -9: no goodbye, so only the silence tells; the sweep marks it lost
    os.killpg(child.popen.pid, signal.SIGKILL)
    live_stack.stack.supervisor.stop(child.name)
    from officina.platform.fleet.service import FleetService

    fleet = FleetService(live_stack.services.pool)
    # (the sweep uses 30 s; 8 s is still above the 5 s heartbeat, so live workers stay online)
    _wait(lambda: (fleet.mark_lost(older_than_s=8), _workers(api)[name]["status"] == "lost")[1], timeout=40)
    assert _workers(api)[worker["name"]]["status"] == "online"

    # a clean stop says goodbye: the worker is "stopped" and leaves the default listing
    child = live_stack.stack.supervisor.start(PROCESS_TYPES["worker"](settings, 8))
    name8 = _wait(lambda: next((n for n, w in _workers(api).items() if n.startswith("worker8@")
                                and w["status"] == "online"), None))
    live_stack.stack.supervisor.stop(child.name)
    assert name8 not in _workers(api) and _workers(api, everything=True)[name8]["status"] == "stopped"
