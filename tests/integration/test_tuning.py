"""Tuning on the real stack: studies whose trials are real jobs on real Celery workers, driven by the
beat-driven task, with Optuna's samplers and pruners keeping their state in the platform's Postgres."""
from __future__ import annotations

import time

import pytest

from checks import assert_error
from test_jobs import Jobs

# A trial: score rises with each step, faster the closer x is to 0.3; stops when asked.
TRIAL = """
import json, os, signal, time
from officina import sdk

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
p = json.loads(os.environ["OFFICINA_PARAMS"])
run = sdk.init()
for step in range(1, {steps} + 1):
    time.sleep({dt})
    run.log_metric("{metric}", step * (1 - abs(p["x"] - 0.3)) + p.get("bonus", 0), step=step)
    if stop or run.should_stop():
        print("stopping at step", step, "because", run.stop_reason or "SIGTERM", flush=True)
        break
run.finish()
"""


def _trial(steps: int = 3, dt: float = 0.2, metric: str = "score") -> str:
    return TRIAL.format(steps=steps, dt=dt, metric=metric)


class Studies:
    def __init__(self, api, team: str):
        self.api, self.team, self.jobs = api, team, Jobs(api, team)

    def create(self, script: str, **body) -> dict:
        code = self.jobs.upload({"trial.py": script})
        payload = {"name": f"s{time.monotonic_ns()}", "metric": "score", "mode": "max",
                   "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}}, **body}
        payload["job"] = {"entrypoint": "trial.py", "code": code, **body.get("job", {})}
        response = self.api.post(f"/teams/{self.team}/studies", payload)
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["study"]

    def get(self, study_id: str) -> tuple[dict, list[dict]]:
        body = self.api.get(f"/studies/{study_id}").get_json()
        return body["study"], body["trials"]

    def wait(self, study_id: str, timeout: float = 180) -> tuple[dict, list[dict]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            study, trials = self.get(study_id)
            if study["state"] != "running":
                return study, trials
            time.sleep(0.5)
        raise AssertionError(f"study still running: {self.get(study_id)}")


@pytest.fixture
def studies(api, live_stack):
    return Studies(api, live_stack.make_team())


def test_random_and_tpe_studies_run_trials_as_jobs_and_find_the_best(studies, api):
    for algorithm in ("random", "tpe"):
        study = studies.create(_trial(), trials=6, parallel=3, algorithm=algorithm, seed=7)
        done, trials = studies.wait(study["id"])
        assert done["state"] == "succeeded", done
        assert [t["number"] for t in trials] == list(range(6))
        assert all(t["state"] == "complete" and t["job_state"] == "succeeded" for t in trials), trials
        assert len({t["params"]["x"] for t in trials}) == 6  # six different draws
        best = max(trials, key=lambda t: t["value"])
        assert done["best"]["number"] == best["number"] and done["best"]["value"] == pytest.approx(best["value"])
        assert done["best"]["value"] == pytest.approx(3 * (1 - abs(best["params"]["x"] - 0.3)))
        job = studies.jobs.get(best["job_id"])  # a trial is an ordinary job with its parameters
        assert job["spec"]["params"]["x"] == best["params"]["x"] and job["name"].endswith(f"-trial-{best['number']}")
    importance = api.get(f"/studies/{study['id']}/importance").get_json()["importance"]
    assert set(importance) == {"x"}


def test_asha_prunes_bad_trials_which_stop_when_told(studies):
    # parallel 2 on the test worker's 3 slots: the study's driver task shares the worker with its trials (a known
    # limit, see docs/tuning.md), and with every slot taken pruning waits for a trial to end
    study = studies.create(_trial(steps=12, dt=0.5), trials=9, parallel=2, algorithm="random", seed=3,
                           early_stopping="asha", job={"params": {"bonus": 0}})
    done, trials = studies.wait(study["id"], timeout=300)
    assert done["state"] == "succeeded", done
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, trials
    assert all(t["reason"].startswith("pruned by asha at step") for t in pruned), pruned
    # its job is cancelled (one pruned at its very last step may have finished first)
    assert any(t["job_state"] == "cancelled" for t in pruned), pruned
    # a trial pruned before its last step (ASHA's rungs are steps 1, 3 and 9; the word takes up to ~2 s,
    # 4 steps, to arrive, more on a loaded machine) was told: should_stop() (or SIGTERM) ended its loop early
    early = [t for t in pruned if t["job_state"] == "cancelled" and t["last_step"] is not None and t["last_step"] <= 9]
    assert early, pruned
    logs = [line for t in early for line in studies.jobs.logs(t["job_id"])]
    assert any(line.startswith("stopping at step") for line in logs), logs
    complete = [t for t in trials if t["state"] == "complete"]
    assert complete
    assert done["best"]["number"] in {t["number"] for t in complete}


def test_bad_studies_are_refused_or_fail_clearly(studies, api):
    team = studies.team
    code = studies.jobs.upload({"trial.py": _trial()})
    base = {"name": "bad", "metric": "score", "job": {"entrypoint": "trial.py", "code": code}}
    for space, mentions in (({}, "space"), ({"x": {"type": "float", "low": 1, "high": 1}}, "low (1) must be below"),
                            ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, "log range must be above 0"),
                            ({"x": {"type": "normal", "mu": 0}}, "type float, int or choice"),
                            ({"x": {"type": "choice", "choices": []}}, "choices must be a non-empty list")):
        assert_error(api.post(f"/teams/{team}/studies", {**base, "space": space}), 400, "invalid", mentions=mentions)
    good_space = {"x": {"type": "float", "low": 0, "high": 1}}
    assert_error(api.post(f"/teams/{team}/studies", {**base, "space": good_space, "algorithm": "genetic"}),
                 400, "invalid", mentions="algorithm")
    assert_error(api.post(f"/teams/{team}/studies", {**base, "space": good_space, "budget": "lots"}),
                 400, "invalid", mentions="budget")
    assert_error(api.post(f"/teams/{team}/studies", {**base, "space": good_space, "parallel": 0}),
                 400, "invalid", mentions="parallel")
    assert_error(api.post(f"/teams/{team}/studies", {**base, "space": good_space,
                                                     "job": {"entrypoint": "nope.py", "code": code}}),
                 400, "invalid", mentions="entrypoint")
    assert api.get(f"/teams/{team}/studies").get_json()["studies"] == []  # nothing half-made

    # a metric the trials never log: the study fails after the first trials, naming what they logged
    study = studies.create(_trial(metric="accuracy"), metric="val_acc", trials=6, parallel=2)
    done, trials = studies.wait(study["id"])
    assert done["state"] == "failed" and "without logging 'val_acc'" in done["reason"], done
    assert "they logged: accuracy" in done["reason"] and len(trials) <= 4

    # a budget that runs out: the study stops cleanly and cancels what still runs
    study = studies.create(_trial(steps=20, dt=0.5), trials=10, parallel=2, budget="4s")
    done, trials = studies.wait(study["id"])
    assert done["state"] == "stopped" and done["reason"].startswith("budget used"), done
    assert len(trials) < 10 and not any(t["state"] in ("running", "pruning") for t in trials), trials
    ended = [studies.jobs.wait(t["job_id"]) for t in trials]  # what still ran is cancelled, cleanly
    assert {j["state"] for j in ended} <= {"succeeded", "cancelled"} and "cancelled" in {j["state"] for j in ended}


def test_study_resumes_after_every_process_restarts(studies, live_stack):
    study = studies.create(_trial(steps=2, dt=0.3), trials=5, parallel=1)
    deadline = time.monotonic() + 60
    while sum(t["state"] == "complete" for t in studies.get(study["id"])[1]) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    stack = live_stack.stack
    for name in ("beat-0", "scheduler-0", "worker-0"):  # the driver, the scheduler and the worker all go
        stack.supervisor.stop(name)
    time.sleep(2)
    for kind in ("worker", "beat", "scheduler"):
        stack.start(kind)
    done, trials = studies.wait(study["id"], timeout=180)
    assert done["state"] == "succeeded", (done, trials)
    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4] and all(t["state"] == "complete" for t in trials)

    # and it can be extended with more trials afterwards
    extended = studies.api.post(f"/studies/{study['id']}/extend", {"trials": 2}).get_json()["study"]
    assert extended["state"] == "running"
    done, trials = studies.wait(study["id"], timeout=120)
    assert done["state"] == "succeeded" and len(trials) == 7


def test_parallelism_above_quota_waits_and_says_why(api, live_stack):
    from officina.infra.processes import PROCESS_TYPES

    settings = live_stack.settings.model_copy(update={"worker_simulated_gpus": 2, "worker_queues": "gpu"})
    worker = live_stack.stack.supervisor.start(PROCESS_TYPES["worker"](settings, 41))
    try:
        team = live_stack.make_team()
        assert api.put(f"/teams/{team}/quota", {"max_gpus": 1}).status_code == 200
        studies = Studies(api, team)
        study = studies.create(_trial(steps=4, dt=0.4), trials=4, parallel=3, job={"gpus": 1})
        reasons, peak = set(), 0
        deadline = time.monotonic() + 180
        while True:
            current, trials = studies.get(study["id"])
            reasons.add(current["reason"])
            with live_stack.services.pool.connection() as conn:
                peak = max(peak, conn.execute("SELECT count(*) FROM gpu_leases l JOIN teams t ON t.id = l.team_id"
                                              " WHERE t.name = %s", (team,)).fetchone()[0])
            if current["state"] != "running":
                break
            assert time.monotonic() < deadline, current
            time.sleep(0.2)
        assert current["state"] == "succeeded" and len(trials) == 4
        assert peak == 1
        assert any(r.endswith("waiting: team quota 1/1 GPUs in use") for r in reasons), reasons
    finally:
        live_stack.stack.supervisor.stop(worker.name)


def test_sdk_tune_and_the_cli(sdk_client, live_stack, tmp_path):
    from click.testing import CliRunner

    from officina.infra.cli import main
    from officina.sdk.tuning import choice, uniform

    sdk = sdk_client
    team = live_stack.make_team()
    (tmp_path / "trial.py").write_text(_trial())
    study = sdk.tune("trial.py", code_dir=tmp_path, team=team, metric="score", trials=4, parallel=2,
                     algorithm="tpe", space={"x": uniform(0, 1), "bonus": choice([0, 1])}, name="from-sdk")
    study.wait(timeout=180, poll=0.5)
    assert study.state == "succeeded" and len(study.trials) == 4
    assert study.best["value"] == max(t["value"] for t in study.trials)
    assert study.best["params"]["bonus"] in (0, 1)
    with pytest.raises(sdk.errors.InvalidRequest, match="low"):
        sdk.tune("trial.py", code_dir=tmp_path, team=team, metric="score", space={"x": uniform(1, 0)})

    runner = CliRunner()
    space = '{"x": {"type": "float", "low": 0, "high": 1}}'
    done = runner.invoke(main, ["tune", "trial.py", "--code-dir", str(tmp_path), "--team", team, "--metric", "score",
                                "--space", space, "--trials", "2", "--parallel", "2", "--name", "from-cli", "--follow"])
    assert done.exit_code == 0, done.output
    assert "started study from-cli" in done.output and "best: trial" in done.output
    assert done.output.count(" complete ") == 2
    listed = runner.invoke(main, ["studies", "list", "--team", team])
    assert listed.exit_code == 0 and "from-sdk" in listed.output and "from-cli" in listed.output
    shown = runner.invoke(main, ["studies", "show", study.id])
    assert shown.exit_code == 0 and "trial   3" in shown.output
    bad = runner.invoke(main, ["tune", "trial.py", "--code-dir", str(tmp_path), "--team", team, "--metric", "score",
                               "--space", "{nope"])
    assert bad.exit_code == 2 and "not JSON" in bad.output
