"""The scheduler on the real stack: two real Celery workers with 2 simulated GPUs each, the real
scheduler process (and standbys), real Postgres.

Quota enforcement under 100 concurrent submissions, exact GPU devices, fair share, priority,
preemption with resume from checkpoint, a lost worker's job resuming elsewhere, and leader failover.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from checks import wait_until
from test_jobs import Jobs

SLEEPER = "import time\ntime.sleep({seconds})\n"

# Saves a checkpoint every step and resumes from the latest; on SIGTERM (preemption) it saves and yields.
RESUMABLE = """
import os, signal, sys, time
from officina import sdk

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)

found = sdk.checkpoint.load()
start = int(found[1].decode()) + 1 if found else 0
print("attempt", os.environ["OFFICINA_ATTEMPT"], "starts at step", start, "on GPUs",
      os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
for step in range(start, {steps}):
    time.sleep({dt})
    sdk.checkpoint.save(str(step).encode(), step)
    if stop:
        print("checkpointed step", step, "and yielding", flush=True)
        sys.exit(0)
print("done", flush=True)
"""


def _wait(predicate, timeout: float = 60.0, every: float = 0.2):
    return wait_until(predicate, timeout, every)


@pytest.fixture(scope="module")
def gpu_workers(live_stack):
    """Two workers on the gpu queue with 2 simulated GPUs each (as OFFICINA_WORKER_SIMULATED_GPUS=2)."""
    from officina.infra.processes import PROCESS_TYPES

    settings = live_stack.settings.model_copy(update={"worker_simulated_gpus": 2, "worker_queues": "gpu",
                                                      "worker_concurrency": 2})
    children = [live_stack.stack.supervisor.start(PROCESS_TYPES["worker"](settings, i)) for i in (21, 22)]
    pool = live_stack.services.pool

    def online():
        with pool.connection() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM workers WHERE status = 'online'"
                                               " AND (name LIKE 'worker21@%%' OR name LIKE 'worker22@%%')")]

    names = _wait(lambda: len(online()) == 2 and sorted(online()))
    yield names
    for child in children:
        live_stack.stack.supervisor.stop(child.name)


class Team:
    """A team with its own jobs helper; cancels whatever it left running."""

    def __init__(self, api, live_stack, **quota):
        self.name = live_stack.make_team()
        self.jobs = Jobs(api, self.name)
        self.api, self.pool = api, live_stack.services.pool
        if quota:
            assert api.put(f"/teams/{self.name}/quota", quota).status_code == 200

    def submit(self, script: str, **spec) -> dict:
        return self.jobs.submit(script, **spec)

    def cleanup(self) -> None:
        for job in self.api.get(f"/teams/{self.name}/jobs").get_json()["jobs"]:
            if job["state"] not in ("succeeded", "failed", "cancelled"):
                self.api.post(f"/jobs/{job['id']}/cancel")


@pytest.fixture
def teams(api, live_stack, gpu_workers):
    made: list[Team] = []

    def make(**quota) -> Team:
        made.append(Team(api, live_stack, **quota))
        return made[-1]

    yield make
    for t in made:
        t.cleanup()
    # every GPU is free again before the next test
    _wait(lambda: _count(live_stack, "SELECT count(*) FROM gpu_leases") == 0, timeout=60)


def _count(live_stack, sql: str, *args) -> int:
    with live_stack.services.pool.connection() as conn:
        return conn.execute(sql, args).fetchone()[0]


def _admissions(live_stack, job_ids) -> list[tuple[str, int, str]]:
    """(job, attempt, reason) of every admission of these jobs, in order."""
    with live_stack.services.pool.connection() as conn:
        return conn.execute("SELECT job_id::text, attempt, reason FROM job_events WHERE to_state = 'admitted'"
                            " AND job_id = ANY(%s::uuid[]) ORDER BY id", (list(job_ids),)).fetchall()


def _fill(teams, count: int = 4, priority: str = "high") -> list[dict]:
    """Occupy every simulated GPU with a long sleeper of a separate team; wait until they all run."""
    blockers = teams()
    jobs = [blockers.submit(SLEEPER.format(seconds=600), gpus=1, priority=priority) for _ in range(count)]
    for job in jobs:
        blockers.jobs.wait(job["id"], states=("running",), timeout=60)
    return jobs


def test_gpu_jobs_get_exact_devices_and_release_them(teams, live_stack, gpu_workers):
    team = teams()
    job = team.submit("import os\nprint('devices', os.environ['CUDA_VISIBLE_DEVICES'])\n", gpus=2)
    done = team.jobs.wait(job["id"])
    assert done["state"] == "succeeded", done
    assert done["worker"] in gpu_workers and done["gpu_indices"] == [0, 1]
    assert "devices 0,1" in team.jobs.logs(job["id"])
    (_, _, reason), = _admissions(live_stack, [job["id"]])
    assert reason == f"admitted on {done['worker']}, GPUs 0,1"
    _wait(lambda: _count(live_stack, "SELECT count(*) FROM gpu_leases WHERE job_id = %s", job["id"]) == 0)
    with live_stack.services.pool.connection() as conn:  # its GPU time is recorded for budgets
        assert conn.execute("SELECT count(*) FROM gpu_usage u JOIN teams t ON t.id = u.team_id"
                            " WHERE t.name = %s", (team.name,)).fetchone()[0] == 2


def test_quota_holds_under_100_concurrent_submissions(teams, live_stack):
    team = teams(max_gpus=2)
    code = team.jobs.upload({"main.py": SLEEPER.format(seconds=1.5)})
    url, token = live_stack.url, live_stack.admin_token
    team_id = _count(live_stack, "SELECT id FROM teams WHERE name = %s", team.name)
    seen, stop = [], threading.Event()

    def watch():
        with live_stack.services.pool.connection() as conn:
            while not stop.is_set():
                seen.append(conn.execute(
                    "SELECT (SELECT count(*) FROM gpu_leases WHERE team_id = %(t)s),"
                    " (SELECT coalesce(sum(gpus), 0) FROM jobs WHERE team_id = %(t)s"
                    "  AND state IN ('admitted', 'running'))", {"t": team_id}).fetchone())
                time.sleep(0.02)

    def submit(_):
        r = requests.post(f"{url}/api/v1/teams/{team.name}/jobs", json={"entrypoint": "main.py", "code": code,
                          "gpus": 1}, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 201, r.text
        return r.json()["job"]["id"]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            ids = list(pool.map(submit, range(100)))
        # some finish, others take their place, all within the quota
        _wait(lambda: _count(live_stack, "SELECT count(*) FROM jobs WHERE team_id = %s AND state = 'succeeded'",
                             team_id) >= 4, timeout=90)
    finally:
        stop.set()
        watcher.join()
    assert len(set(ids)) == 100
    assert max(leases for leases, _ in seen) == 2 and max(held for _, held in seen) == 2  # used, never over
    waiting = team.jobs.get(ids[-1])
    assert waiting["state"] == "queued" and waiting["reason"] == "waiting: team quota 2/2 GPUs in use"
    # also from the record: at no instant did more than 2 of its jobs hold GPUs
    with live_stack.services.pool.connection() as conn:
        spans = conn.execute(
            "SELECT a.at, coalesce((SELECT min(e.at) FROM job_events e WHERE e.job_id = a.job_id AND e.id > a.id"
            "  AND e.to_state IN ('succeeded', 'failed', 'cancelled', 'queued')), now())"
            " FROM job_events a WHERE a.to_state = 'admitted' AND a.job_id = ANY(%s::uuid[])", (ids,)).fetchall()
    points = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda p: (p[0], p[1]))
    level = peak = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    assert peak <= 2


def test_fair_share_between_teams_when_gpus_free_up(teams, live_stack):
    blockers = _fill(teams)
    a, b = teams(), teams()
    a_jobs = [a.submit(SLEEPER.format(seconds=600), gpus=1) for _ in range(4)]  # a queued first ...
    b_jobs = [b.submit(SLEEPER.format(seconds=600), gpus=1) for _ in range(4)]
    waiting = _wait(lambda: a.jobs.get(a_jobs[0]["id"])["reason"])
    assert waiting.startswith("waiting: no worker with 1 free GPU")
    for job in blockers:
        assert live_stack.services.pool  # (the blockers are cancelled by their owner, as a person would)
        a.api.post(f"/jobs/{job['id']}/cancel")
    ids = [j["id"] for j in a_jobs + b_jobs]
    admitted = _wait(lambda: (lambda adm: adm if len(adm) >= 4 else None)(_admissions(live_stack, ids)), timeout=60)
    first4 = {job_id for job_id, _, _ in admitted[:4]}
    # ... yet the freed GPUs are shared 2 and 2 (FIFO would have given all four to team a)
    assert len(first4 & {j["id"] for j in a_jobs}) == 2 and len(first4 & {j["id"] for j in b_jobs}) == 2


def test_priority_goes_before_age(teams, live_stack):
    blockers = _fill(teams)
    a, b = teams(), teams()
    old_low = a.submit(SLEEPER.format(seconds=1), gpus=1, priority="low")
    young_high = b.submit(SLEEPER.format(seconds=1), gpus=1, priority="high")
    b.api.post(f"/jobs/{blockers[0]['id']}/cancel")  # one GPU frees up
    first = _wait(lambda: _admissions(live_stack, [old_low["id"], young_high["id"]]))
    assert first[0][0] == young_high["id"]


def test_preemption_checkpoints_requeues_and_resumes(teams, live_stack):
    hog = teams()
    resumable = RESUMABLE.format(steps=400, dt=0.2)
    victims = [hog.submit(resumable, gpus=1, priority="normal") for _ in range(4)]
    for job in victims:
        hog.jobs.wait_log(job["id"], "starts at step 0")
    urgent = teams()
    vip = urgent.submit("print('urgent work done')\n", gpus=2, priority="high")
    done = urgent.jobs.wait(vip["id"], timeout=90)
    assert done["state"] == "succeeded" and "urgent work done" in urgent.jobs.logs(vip["id"])

    preempted = [j for j in (hog.jobs.get(v["id"]) for v in victims) if j["preemptions"]]
    assert len(preempted) == 2
    # both victims were on the worker the urgent job then got (two GPUs of one machine)
    first_places = {job_id: reason for job_id, attempt, reason in _admissions(live_stack, [j["id"] for j in preempted])
                    if attempt == 1}
    assert all(reason.startswith(f"admitted on {done['worker']},") for reason in first_places.values())
    for job in preempted:
        events = hog.jobs.events(job["id"])
        assert any(e["reason"].startswith("preemption requested: preempted for higher-priority job") for e in events)
        assert any(e["to_state"] == "queued" and "preempted" in e["reason"] for e in events)
        # it resumes from its checkpoint in a new attempt, not from step 0
        # (the log holds every attempt: wait for a later attempt's start line, not the first one's)
        line = _wait(lambda: next((line for line in hog.jobs.logs(job["id"])
                                   if "starts at step" in line and not line.startswith("attempt 1 ")), None),
                     timeout=90)
        assert int(line.split("starts at step")[1].split()[0]) > 0, line
        first_attempt = hog.jobs.logs(job["id"], attempt=1)
        assert any("checkpointed step" in line for line in first_attempt), first_attempt
    # the two that were not preempted kept running undisturbed
    assert sum(1 for v in victims if hog.jobs.get(v["id"])["preemptions"] == 0) == 2


def test_lost_worker_job_resumes_on_another_worker(teams, live_stack):
    from officina.infra.processes import PROCESS_TYPES

    settings = live_stack.settings.model_copy(update={"worker_simulated_gpus": 3, "worker_queues": "gpu"})
    sup = live_stack.stack.supervisor
    big = sup.start(PROCESS_TYPES["worker"](settings, 23))
    team = teams()
    job = team.submit(RESUMABLE.format(steps=40, dt=0.25), gpus=3)  # only worker23 has 3 GPUs
    team.jobs.wait_log(job["id"], "starts at step 0")
    _wait(lambda: int(team.jobs.get(job["id"])["state"] == "running"
                      and _count(live_stack, "SELECT count(*) FROM checkpoints c JOIN jobs j ON j.run_id = c.run_id"
                                             " WHERE j.id = %s", job["id"]) >= 3))
    first = team.jobs.get(job["id"])
    assert first["worker"].startswith("worker23@")
    os.killpg(big.popen.pid, signal.SIGKILL)  # the machine dies: no goodbye
    sup.stop(big.name)

    # lost: its leases go, the job waits (no other worker has 3 GPUs) and says so
    # (first "retry 1 of 2" as the lease is given up, then the scheduler's waiting reason)
    reason = _wait(lambda: (lambda j: j["state"] == "queued" and j["reason"].startswith("waiting:") and j["reason"])(
        team.jobs.get(job["id"])), timeout=60)
    assert reason.startswith("waiting: no online worker has 3 GPUs (the largest has 2)"), reason
    assert _count(live_stack, "SELECT count(*) FROM workers WHERE name = %s AND status = 'lost'", first["worker"]) == 1
    assert _count(live_stack, "SELECT count(*) FROM gpu_leases WHERE worker = %s", first["worker"]) == 0

    replacement = sup.start(PROCESS_TYPES["worker"](settings, 24))
    try:
        done = team.jobs.wait(job["id"], timeout=120)
        assert done["state"] == "succeeded" and done["worker"].startswith("worker24@"), done
        resumed = next(line for line in team.jobs.logs(job["id"]) if "starts at step" in line)
        assert int(resumed.split("starts at step")[1].split()[0]) >= 3  # from the checkpoint, not from 0
    finally:
        sup.stop(replacement.name)


def test_leader_failover_without_double_dispatch(teams, live_stack):
    from officina.infra.processes import PROCESS_TYPES

    sup = live_stack.stack.supervisor

    def leader():
        with live_stack.services.pool.connection() as conn:
            return conn.execute("SELECT leader FROM scheduler_state").fetchone()[0]

    standbys = [sup.start(PROCESS_TYPES["scheduler"](live_stack.settings, i)) for i in (1, 2)]
    try:
        first = _wait(leader)
        team = teams()
        before = [team.submit(SLEEPER.format(seconds=0.5), gpus=1) for _ in range(3)]
        os.kill(int(first.rsplit(":", 1)[1]), signal.SIGKILL)  # the leader dies mid-flight
        after = [team.submit(SLEEPER.format(seconds=0.5), gpus=1) for _ in range(5)]
        new = _wait(lambda: (lambda name: name if name and name != first else None)(leader()), timeout=30)
        assert new != first
        for job in before + after:
            assert team.jobs.wait(job["id"], timeout=90)["state"] == "succeeded"
        admissions = _admissions(live_stack, [j["id"] for j in before + after])
        assert len(admissions) == len({(job_id, attempt) for job_id, attempt, _ in admissions}) == 8
    finally:
        for child in standbys:
            sup.stop(child.name)
        dead = [c for c in sup.children if c.name.startswith("scheduler") and c.popen.poll() is not None]
        for child in dead:  # the killed one was the stack's own: start it again for the other tests
            sup.stop(child.name)
            live_stack.stack.start("scheduler")
        _wait(leader)


def test_who_holds_what_and_why_jobs_wait_over_api_and_sdk(teams, live_stack, api, sdk_client, gpu_workers):
    from checks import assert_error

    team = teams()
    running = team.submit(SLEEPER.format(seconds=600), gpus=1)
    team.jobs.wait(running["id"], states=("running",))
    placed = team.jobs.get(running["id"])
    workers = {w["name"]: w for w in api.get("/fleet/workers").get_json()["workers"]}
    gpu = next(g for g in workers[placed["worker"]]["gpus"] if g["index"] == placed["gpu_indices"][0])
    assert gpu["holder"]["job_id"] == running["id"] and gpu["holder"]["team"] == team.name

    broke = teams(gpu_hours_per_week=0)  # a budget used up: its jobs wait and say why
    waiting = broke.submit(SLEEPER.format(seconds=1), gpus=1)
    reason = _wait(lambda: broke.jobs.get(waiting["id"])["reason"])
    assert reason == "waiting: team GPU-hour budget used (0.0/0 h this week)"

    queue = {j["id"]: j for j in sdk_client.admin.queue()}
    assert queue[running["id"]]["state"] == "running" and queue[running["id"]]["worker"] == placed["worker"]
    assert queue[waiting["id"]]["reason"] == reason
    state = sdk_client.admin.scheduler()
    assert state["leader"] and state["last_pass"]["gpus"] >= 4 and state["last_pass_ms"] is not None

    # members see their own teams' jobs only; bad input is a clear 400
    username, _, token = live_stack.make_user(team.name, "member")
    mine = api.get("/scheduler/queue", token=token).get_json()["jobs"]
    assert {j["team"] for j in mine} == {team.name}
    assert_error(api.get("/scheduler/queue?limit=lots"), 400, "invalid", mentions="limit")
    assert_error(api.get("/scheduler", token=None), 401, "unauthenticated")


def test_cli_shows_the_queue_and_fleet_and_sets_quotas(live_stack, sdk_client, gpu_workers):
    from click.testing import CliRunner

    from officina.infra.cli import main

    team = live_stack.make_team()
    runner = CliRunner()
    done = runner.invoke(main, ["quota", "set", team, "--gpus", "3", "--gpu-hours", "none", "--weight", "2"])
    assert done.exit_code == 0, done.output
    assert "max GPUs 3, no budget" in done.output and "weight 2" in done.output
    shown = runner.invoke(main, ["quota", "show", team])
    assert shown.exit_code == 0 and "GPUs 0/3" in shown.output and "no budget" in shown.output
    bad = runner.invoke(main, ["quota", "set", team, "--gpus", "-1"])
    assert bad.exit_code == 1 and "max_gpus" in bad.output
    assert runner.invoke(main, ["quota", "set", team]).exit_code == 2
    fleet = runner.invoke(main, ["fleet"])
    assert fleet.exit_code == 0 and "scheduler leader:" in fleet.output
    assert all(name in fleet.output for name in gpu_workers) and "GPU 1 simulated GPU" in fleet.output
    assert runner.invoke(main, ["queue"]).exit_code == 0
