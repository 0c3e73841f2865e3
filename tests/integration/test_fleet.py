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


def test_admins_set_quotas_audited_and_submit_checks(api, sdk_client, live_stack):
    from test_jobs import Jobs

    sdk = sdk_client
    team = live_stack.make_team()
    quota = sdk.admin.quota(team)
    assert quota["max_gpus"] is None and quota["max_priority"] == "high" and quota["gpus_in_use"] == 0
    changed = sdk.admin.set_quota(team, gpus=4, gpu_hours_per_week=100, max_priority="normal")
    assert changed["max_gpus"] == 4 and changed["gpu_hours_per_week"] == 100 and changed["weight"] == 1
    assert sdk.admin.set_quota(team, weight=2.5)["max_gpus"] == 4  # only the given fields change
    with live_stack.services.pool.connection() as conn:
        audit = conn.execute("SELECT detail FROM audit_log WHERE action = 'quota.set' AND target = %s ORDER BY id",
                             (f"team:{team}",)).fetchall()
    assert audit[0][0]["old"]["max_gpus"] is None and audit[0][0]["new"]["max_gpus"] == 4
    assert audit[1][0]["old"]["weight"] == 1 and audit[1][0]["new"]["weight"] == 2.5
    assert any(q["team"] == team for q in sdk.admin.quotas())

    base = f"/teams/{team}/quota"
    assert_error(api.put(base, {"max_gpus": -1}), 400, "invalid", mentions="max_gpus")
    assert_error(api.put(base, {"max_gpus": 10**9}), 400, "invalid", mentions="max_gpus")
    assert_error(api.put(base, {"weight": 0}), 400, "invalid", mentions="weight")
    assert_error(api.put(base, {"max_priority": "urgent"}), 400, "invalid", mentions="max_priority")
    assert_error(api.put(base, {"colour": "red"}), 400, "invalid", mentions="colour")
    member = live_stack.make_user(team, "admin")[2]  # a team admin, not a site admin
    assert_error(api.put(base, {"max_gpus": 8}, token=member), 403, "forbidden", mentions="administrators")
    assert api.get(base, token=member).get_json()["quota"]["max_gpus"] == 4  # members may read it

    jobs = Jobs(api, team)
    code = jobs.upload({"main.py": "print(1)\n"})
    assert_error(api.post(f"/teams/{team}/jobs", {"entrypoint": "main.py", "code": code, "priority": "high"},
                          token=member), 403, "forbidden", mentions="up to priority normal")
    assert_error(api.post(f"/teams/{team}/jobs", {"entrypoint": "main.py", "code": code, "gpus": 3}), 400,
                 "invalid", mentions="largest online worker has")
    ok = api.post(f"/teams/{team}/jobs", {"entrypoint": "main.py", "code": code, "priority": "normal"}, token=member)
    assert ok.status_code == 201
