"""Jobs on the real stack: code bundles, submit, logs, events, cancel, timeout, lost workers, outbox.

User scripts run in subprocesses of the live stack's real Celery worker; the sweep runs from the
real beat process (lease 6 s, sweep every second in this stack).
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import textwrap
import time

import pytest

from checks import assert_error


def bundle(files: dict[str, str | bytes], *, links: dict[str, str] | None = None) -> tuple[str, bytes]:
    """A .tar.gz code bundle and its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    data = buf.getvalue()
    return hashlib.sha256(data).hexdigest(), data


class Jobs:
    def __init__(self, api, team: str):
        self.api, self.team = api, team

    def upload(self, files: dict[str, str | bytes], **kw) -> str:
        sha, data = bundle(files, **kw)
        response = self.api.call("PUT", f"/teams/{self.team}/code/{sha}", data=data, content_type="application/gzip")
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        return sha

    def submit(self, script: str, entrypoint: str = "main.py", extra: dict | None = None, **spec) -> dict:
        code = self.upload({entrypoint: textwrap.dedent(script), **(extra or {})})
        response = self.api.post(f"/teams/{self.team}/jobs", {"entrypoint": entrypoint, "code": code, **spec})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["job"]

    def get(self, job_id: str) -> dict:
        return self.api.get(f"/jobs/{job_id}").get_json()["job"]

    def wait(self, job_id: str, states=("succeeded", "failed", "cancelled"), timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if job["state"] in states:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job did not reach {states}: {job} {self.events(job_id)}")

    def events(self, job_id: str) -> list[dict]:
        return self.api.get(f"/jobs/{job_id}/events").get_json()["events"]

    def logs(self, job_id: str, attempt: int | None = None) -> list[str]:
        query = f"?attempt={attempt}" if attempt else ""
        return [line["line"] for line in self.api.get(f"/jobs/{job_id}/logs{query}").get_json()["lines"]]

    def wait_log(self, job_id: str, text: str, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.logs(job_id)
            if any(text in line for line in lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared in the log of {job_id}: {self.logs(job_id)}")


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


@pytest.fixture
def jobs(api, team):
    return Jobs(api, team)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead too
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_script_runs_with_params_logs_events_and_a_run(jobs, live_stack):
    job = jobs.submit("""
        import json, os, sys
        params = json.loads(os.environ["OFFICINA_PARAMS"])
        print("lr is", params["lr"], "run", os.environ["OFFICINA_RUN_ID"])
        print("secret leak:", [k for k in os.environ if k.startswith("OFFICINA_") and k not in (
            "OFFICINA_URL", "OFFICINA_TOKEN", "OFFICINA_RUN_ID", "OFFICINA_JOB_ID", "OFFICINA_ATTEMPT",
            "OFFICINA_TEAM", "OFFICINA_PROJECT", "OFFICINA_PARAMS", "OFFICINA_DATASETS")])
        print("to stderr", file=sys.stderr)
    """, params={"lr": 0.01}, project="demo", name="hello")
    assert job["state"] in ("admitted", "running", "succeeded") and job["attempt"] == 1
    done = jobs.wait(job["id"])
    assert done["state"] == "succeeded" and done["exit_code"] == 0, done
    lines = jobs.logs(job["id"])
    assert f"lr is 0.01 run {done['run_id']}" in lines and "to stderr" in lines
    assert "secret leak: []" in lines  # no server settings reach user code
    states = [e["to_state"] for e in jobs.events(job["id"])]
    assert states == ["queued", "admitted", "running", "succeeded"]
    with live_stack.services.pool.connection() as conn:
        run = conn.execute("SELECT status, project, name, params FROM runs WHERE id = %s",
                           (done["run_id"],)).fetchone()
    assert run == ("finished", "demo", "hello", {"lr": 0.01})
    listed = jobs.api.get(f"/teams/{jobs.team}/jobs?project=demo").get_json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_failing_script_fails_with_its_exit_code(jobs):
    job = jobs.submit("import sys\nprint('about to fail')\nsys.exit(3)\n", max_retries=2)
    done = jobs.wait(job["id"])
    assert done["state"] == "failed" and done["exit_code"] == 3 and "exited with code 3" in done["reason"]
    assert done["attempt"] == 1  # a script's own failure is not retried: only lost workers are


def test_cancel_kills_the_whole_process_tree(jobs):
    job = jobs.submit("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        print("pids", __import__("os").getpid(), child.pid, flush=True)
        time.sleep(300)
    """)
    lines = jobs.wait_log(job["id"], "pids")
    pids = [int(p) for p in next(line for line in lines if line.startswith("pids")).split()[1:]]
    assert all(_alive(p) for p in pids)
    response = jobs.api.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    done = jobs.wait(job["id"], timeout=30)
    assert done["state"] == "cancelled", done
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "cancel left processes running"
    assert_error(jobs.api.post(f"/jobs/{job['id']}/cancel"), 409, "conflict", mentions="already cancelled")


def test_timeout_kills_the_job(jobs):
    job = jobs.submit("import time, os\nprint('pid', os.getpid(), flush=True)\ntime.sleep(300)\n", timeout="2s")
    done = jobs.wait(job["id"], timeout=40)
    assert done["state"] == "failed" and "timed out after 2 s" in done["reason"], done
    pid = int(next(line for line in jobs.logs(job["id"]) if line.startswith("pid")).split()[1])
    assert not _alive(pid)


def test_a_job_that_kills_its_worker_is_retried_then_fails_with_the_reason(jobs):
    # The script kills the worker process that runs it (kill -9), every time.
    job = jobs.submit("""
        import os, signal, time
        print("attempt", os.environ["OFFICINA_ATTEMPT"], flush=True)
        time.sleep(2)  # the runner stores log lines every 0.5 s: let this one reach the log first
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)
    """, max_retries=1)
    done = jobs.wait(job["id"], timeout=120)
    assert done["state"] == "failed" and done["attempt"] == 2, done
    assert "failed after 2 attempts" in done["reason"] and "stopped renewing" in done["reason"]
    states = [(e["to_state"], e["attempt"]) for e in jobs.events(job["id"])]
    assert ("retrying", 1) in states and ("running", 2) in states
    assert jobs.logs(job["id"], attempt=2)[1:] == ["attempt 2"]


def test_lost_message_is_resent_by_the_sweep(jobs, live_stack, team):
    """A job whose message never reached the broker (or a wiped Redis) still runs."""
    from officina.platform.jobs.lifecycle import Lifecycle
    from officina.platform.jobs.service import JobService
    from officina.platform.storage.blobs import BlobStore

    svc = live_stack.services
    dropped = []
    lossy = Lifecycle(svc.pool, lambda name, args, queue: dropped.append(args), lease_s=6.0)
    service = JobService(svc.pool, BlobStore(svc.store), svc.auth, svc.datasets, lossy, max_code_bundle=1 << 20)
    code = jobs.upload({"main.py": "print('delivered at last')\n"})
    principal = svc.auth.principal_for_user(svc.auth.get_user("admin").id)
    job = service.submit(principal, team, {"entrypoint": "main.py", "code": code})
    assert dropped == [[job.id, 1]] and job.state == "admitted"
    done = jobs.wait(job.id, timeout=60)
    assert done["state"] == "succeeded" and "delivered at last" in jobs.logs(job.id)


def test_requirements_get_a_cached_environment(jobs):
    script = "import requests\nprint('requests', requests.__version__)\n"
    first = jobs.submit(script, extra={"requirements.txt": "requests\n"})
    done = jobs.wait(first["id"], timeout=120)
    assert done["state"] == "succeeded", (done, jobs.logs(first["id"]))
    second = jobs.submit(script + "print('again')\n", extra={"requirements.txt": "requests\n"})
    assert jobs.wait(second["id"], timeout=60)["state"] == "succeeded"
    assert any("using cached environment" in line for line in jobs.logs(second["id"]))


def test_datasets_are_pinned_and_recorded_as_lineage(jobs, api, team):
    csv = b"a,b,label\n" + b"".join(f"{i},{i * 2},{i % 2}\n".encode() for i in range(50))
    upload = api.post(f"/teams/{team}/datasets/table/versions", data={"file": (io.BytesIO(csv), "t.csv")},
                      json=None, content_type="multipart/form-data")
    assert upload.status_code == 201
    job = jobs.submit("import os\nprint(os.environ['OFFICINA_DATASETS'])\n", datasets={"train": "table"})
    assert job["spec"]["datasets"] == {"train": "table:1"}
    done = jobs.wait(job["id"])
    assert '{"train": "table:1"}' in jobs.logs(job["id"])
    used = api.get(f"/teams/{team}/lineage?consumer_kind=run&consumer_id={done['run_id']}").get_json()["used"]
    assert [(u["dataset"], u["version"], u["role"]) for u in used] == [("table", 1, "train")]


def test_submit_bad_input(jobs, api, team, live_stack):
    base = f"/teams/{team}/jobs"
    code = jobs.upload({"main.py": "print(1)\n"})
    assert_error(api.post(base, {"code": code}), 400, "invalid", mentions="entrypoint is required")
    assert_error(api.post(base, {"entrypoint": "other.py", "code": code}), 400, "invalid", mentions="not in the code")
    assert_error(api.post(base, {"entrypoint": "main.py", "code": "0" * 64}), 400, "invalid", mentions="not been uploaded")
    assert_error(api.post(base, {"entrypoint": "../main.py", "code": code}), 400, "invalid")
    assert_error(api.post(base, {"entrypoint": "main.py", "code": code, "params": [1, 2]}), 400, "invalid",
                 mentions="params")
    assert_error(api.call("POST", base, data=b'{"entrypoint": "main.py", "params": {"x": NaN}}',
                          content_type="application/json"), 400, "invalid")
    assert_error(api.post(base, {"entrypoint": "main.py", "code": code, "timeout": "forever"}), 400, "invalid",
                 mentions="timeout")
    assert_error(api.post(base, {"entrypoint": "main.py", "code": code, "datasets": {"train": "nope"}}), 400,
                 "invalid", mentions="nope")
    assert_error(api.post(base, {"trainer": "image", "entrypoint": "main.py"}), 400, "invalid", mentions="either")
    assert_error(api.post(base, {"entrypoint": "main.py", "code": code, "colour": "red"}), 400, "invalid",
                 mentions="colour")
    # bundles: links out of the bundle, wrong hash, not gzip, over the cap
    sha, data = bundle({"main.py": "print(1)\n"}, links={"evil": "/etc/passwd"})
    assert_error(api.call("PUT", f"/teams/{team}/code/{sha}", data=data, content_type="application/gzip"), 400,
                 "invalid", mentions="evil")
    assert_error(api.call("PUT", f"/teams/{team}/code/{'0' * 64}", data=data, content_type="application/gzip"), 400,
                 "invalid", mentions="sha256")
    plain = b"print(1)\n"
    assert_error(api.call("PUT", f"/teams/{team}/code/{hashlib.sha256(plain).hexdigest()}", data=plain), 400,
                 "invalid", mentions="gzip")
    cap = live_stack.settings.max_code_bundle
    big = os.urandom(cap + 1)
    assert_error(api.call("PUT", f"/teams/{team}/code/{hashlib.sha256(big).hexdigest()}", data=big), 413,
                 "too_large", mentions="OFFICINA_MAX_CODE_BUNDLE")
    # other teams and viewers
    other = live_stack.make_user(live_stack.make_team())[2]
    job = jobs.submit("print('mine')\n")
    assert_error(api.get(f"/jobs/{job['id']}", token=other), 404, "not_found")
    assert_error(api.post(f"/jobs/{job['id']}/cancel", token=other), 404, "not_found")
    viewer = live_stack.make_user(team, role="viewer")[2]
    assert_error(api.post(base, {"entrypoint": "main.py", "code": code}, token=viewer), 403, "forbidden")
    assert_error(api.get("/jobs/not-a-uuid"), 404, "not_found")
    assert_error(api.get(f"/teams/{team}/jobs?state=sleeping"), 400, "invalid", mentions="sleeping")


def test_a_duplicate_delivery_never_runs_a_job_twice(jobs, live_stack):
    """Celery may deliver a message again (acks_late past the visibility timeout): the attempt number fences it."""
    from officina.platform.tasks import JOB_RUN

    job = jobs.submit("import time\nprint('once', flush=True)\ntime.sleep(3)\n")
    jobs.wait_log(job["id"], "once")
    celery = live_stack.services.celery
    assert celery.send_task(JOB_RUN, args=[job["id"], 1], queue="cpu").get(timeout=30) == "skipped"  # same attempt
    assert celery.send_task(JOB_RUN, args=[job["id"], 0], queue="cpu").get(timeout=30) == "skipped"  # a stale one
    done = jobs.wait(job["id"])
    assert done["state"] == "succeeded" and done["attempt"] == 1
    assert jobs.logs(job["id"]).count("once") == 1
    assert [e["to_state"] for e in jobs.events(job["id"])].count("running") == 1
