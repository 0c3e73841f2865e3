"""Tracking on the real stack: runs, metrics (batched, idempotent, downsampled), artifacts, checkpoints,
run-scoped tokens, the SDK's buffered sender surviving an outage, and jobs resuming from checkpoints."""
from __future__ import annotations

import io
import math
import random
import socket
import threading
import time

import pytest

from checks import assert_error
from test_jobs import Jobs


@pytest.fixture
def team(live_stack):
    return live_stack.make_team()


def _run(api, team: str, **body) -> dict:
    response = api.post(f"/teams/{team}/runs", {"project": "track", **body})
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["run"]


def test_metrics_are_idempotent_summarised_and_downsampled(api, team):
    run = _run(api, team, name="curves", params={"lr": 0.1})
    points = [{"key": "loss", "value": 1.0 / (1 + i), "step": i} for i in range(5000)]
    points[2500]["value"] = 50.0  # a spike
    for start in range(0, 5000, 1000):
        response = api.post(f"/runs/{run['id']}/metrics", {"metrics": points[start:start + 1000]})
        assert response.status_code == 200 and response.get_json()["stored"] == 1000
    again = api.post(f"/runs/{run['id']}/metrics", {"metrics": points[:1000] + [{"key": "acc", "value": 0.9,
                                                                                   "step": 3}]})
    assert again.get_json() == {"received": 1001, "stored": 1}  # a retried batch is not counted twice
    summary = api.get(f"/runs/{run['id']}/metrics").get_json()["metrics"]
    assert summary["loss"]["count"] == 5000 and summary["loss"]["max"] == 50.0
    assert summary["loss"]["last"] == pytest.approx(1 / 5000) and summary["acc"]["last"] == 0.9
    history = api.get(f"/runs/{run['id']}/metrics/loss?max_points=200").get_json()
    assert history["total"] == 5000 and history["downsampled"] and len(history["points"]) <= 200
    assert [2500, 50.0] in [p[:2] for p in history["points"]]  # the spike survives downsampling
    steps = [p[0] for p in history["points"]]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 4999
    full = api.get(f"/runs/{run['id']}/metrics/acc").get_json()
    assert full["points"][0][:2] == [3, 0.9] and not full["downsampled"]
    listed = api.get(f"/teams/{team}/runs?project=track&sort=metric:loss:desc").get_json()["runs"]
    assert listed[0]["id"] == run["id"] and listed[0]["metrics"]["acc"] == 0.9


def test_long_histories_are_read_from_tiles_exactly_as_a_full_scan(live_stack, team):
    """Points arrive out of order, in overlapping batches; every read equals the reference downsampler."""
    from officina.platform.tracking.downsample import downsample

    services = live_stack.services
    admin = services.auth.principal_for_user(services.auth.get_user("admin").id)
    run = services.tracking.create_run(admin, team, {"project": "tiles"})
    rng = random.Random(4)
    series = {i: round(rng.gauss(0, 1), 3) for i in range(0, 240_000, 2)}  # 120,000 points, ties included
    series[150_000] = 1e9
    points = [{"key": "loss", "value": v, "step": s} for s, v in series.items()]
    rng.shuffle(points)
    for start in range(0, len(points), 9_000):
        services.tracking.log_metrics(admin, run.id, points[start:start + 10_000])  # overlapping: duplicates
    assert services.tracking.metrics(admin, run.id)["loss"]["count"] == len(series)
    everything = sorted(series.items())
    for max_points, lo, hi in ((1000, None, None), (300, None, None), (1000, 1_001, 200_001), (50, 90_000, 90_400),
                               (5000, 17, None)):
        inside = [(s, v) for s, v in everything if (lo is None or s >= lo) and (hi is None or s <= hi)]
        got = services.tracking.history(admin, run.id, "loss", max_points=max_points, min_step=lo, max_step=hi)
        expected, reduced = downsample(inside, max_points)
        assert [(p[0], p[1]) for p in got["points"]] == expected, (max_points, lo, hi)
        assert got["total"] == len(inside) and got["downsampled"] == reduced
    assert [150_000, 1e9, None] in services.tracking.history(admin, run.id, "loss", max_points=100)["points"]


def test_bad_metrics_and_runs_are_refused_clearly(api, team, live_stack):
    run = _run(api, team)
    base = f"/runs/{run['id']}/metrics"
    for point, mention in (({"key": "loss", "value": float("nan"), "step": 1}, None),
                           ({"key": "loss", "value": "high", "step": 1}, "finite"),
                           ({"key": "loss", "value": 1.0, "step": -1}, "step"),
                           ({"key": "bad\nkey", "value": 1.0, "step": 1}, "key")):
        if mention is None:  # JSON has no NaN, but Python's encoder writes it: the refusal names the point
            response = api.call("POST", base, data=b'{"metrics": [{"key": "ok", "value": 1, "step": 0},'
                                b' {"key": "loss", "value": NaN, "step": 1}]}', content_type="application/json")
            error = assert_error(response, 400, "invalid", mentions="loss at step 1")
            assert "finite" in error["message"] and str(error["details"]["index"]) == "1"
        else:
            assert_error(api.post(base, {"metrics": [point]}), 400, "invalid", mentions=mention)
    assert api.get(f"/runs/{run['id']}/metrics").get_json()["metrics"] == {}  # nothing half-written
    assert_error(api.post(f"/teams/{team}/runs", {"project": "a/b"}), 400, "invalid", mentions="project")
    for path in ("/runs/nope", "/runs/nope/metrics", "/runs/nope/metrics/loss", "/runs/nope/artifacts",
                 "/runs/nope/artifacts/a.txt", "/runs/nope/checkpoints/latest", "/runs/nope/lineage",
                 f"/runs/{run['id']}/metrics/never-logged", f"/runs/{run['id']}/artifacts/none.txt",
                 f"/runs/{run['id']}/checkpoints/7"):
        assert_error(api.get(path), 404, "not_found")
    assert_error(api.post("/runs/nope/metrics", {"metrics": [{"key": "x", "value": 1, "step": 0}]}), 404, "not_found")
    for query, field in (("max_points=1", "max_points"), ("max_points=x", "max_points"),
                         (f"min_step={2**70}", "min_step")):
        assert_error(api.get(f"{base}/loss?{query}"), 400, "invalid", mentions=field)
    assert_error(api.get(f"/runs/{run['id']}/checkpoints/-1"), 400, "invalid")
    assert_error(api.post(base, {"metrics": [{"key": "x", "value": 1, "step": 0}] * 10_001}), 400, "invalid",
                 mentions="at most 10000")
    assert_error(api.post(f"/runs/{run['id']}/params", {"params": [1, 2]}), 400, "invalid", mentions="object")
    other = live_stack.make_user(live_stack.make_team())[2]
    assert_error(api.get(f"/runs/{run['id']}", token=other), 404, "not_found")
    viewer = live_stack.make_user(team, role="viewer")[2]
    assert_error(api.post(base, {"metrics": [{"key": "x", "value": 1, "step": 0}]}, token=viewer), 403, "forbidden")


def test_run_tokens_write_only_to_their_own_run(api, team, live_stack):
    mine, other = _run(api, team), _run(api, team)
    admin = live_stack.services.auth.get_user("admin")
    team_id = live_stack.services.auth.team(
        live_stack.services.auth.principal_for_user(admin.id), team).id
    _, token = live_stack.services.auth.create_token(admin.id, "run", scope={"team_id": team_id, "run": mine["id"]})
    point = {"metrics": [{"key": "x", "value": 1.0, "step": 0}]}
    assert api.post(f"/runs/{mine['id']}/metrics", point, token=token).status_code == 200
    assert_error(api.post(f"/runs/{other['id']}/metrics", point, token=token), 403, "forbidden",
                 mentions="only to that run")
    assert_error(api.post(f"/teams/{team}/runs", {"project": "p"}, token=token), 403, "forbidden")
    upload = api.post(f"/teams/{team}/datasets/from-a-run/versions", json=None, token=token,
                      data={"file": (io.BytesIO(b"a,b\n1,2\n"), "t.csv")}, content_type="multipart/form-data")
    assert_error(upload, 403, "forbidden", mentions=f"belongs to run {mine['id']}")
    assert api.call("PUT", f"/runs/{mine['id']}/checkpoints/1", data=b"x", token=token).status_code == 201
    assert_error(api.call("PUT", f"/runs/{other['id']}/checkpoints/1", data=b"x", token=token), 403, "forbidden")
    assert api.get(f"/runs/{other['id']}", token=token).status_code == 200  # reading the team is fine


def test_artifacts_and_checkpoints_round_trip(api, team):
    run = _run(api, team)
    blob = bytes(range(256)) * 40
    response = api.call("PUT", f"/runs/{run['id']}/artifacts/plots/curve.bin", data=blob,
                        headers={"X-Meta": '{"what": "curve"}'}, content_type="application/octet-stream")
    assert response.status_code == 201 and response.get_json()["artifact"]["meta"] == {"what": "curve"}
    download = api.get(f"/runs/{run['id']}/artifacts/plots/curve.bin")
    assert download.data == blob and download.headers["Content-Length"] == str(len(blob))
    assert_error(api.call("PUT", f"/runs/{run['id']}/artifacts/../x", data=b"x"), 400, "invalid")
    assert_error(api.get(f"/runs/{run['id']}/checkpoints/latest"), 404, "not_found", mentions="no checkpoint")
    for step in (1, 2):
        assert api.call("PUT", f"/runs/{run['id']}/checkpoints/{step}", data=b"state %d" % step).status_code == 201
    latest = api.get(f"/runs/{run['id']}/checkpoints/latest")
    assert latest.data == b"state 2" and latest.headers["X-Checkpoint-Step"] == "2"
    assert latest.headers["X-Checkpoint-Format"] == "bytes"
    assert api.get(f"/runs/{run['id']}/checkpoints/1").data == b"state 1"
    assert_error(api.call("PUT", f"/runs/{run['id']}/checkpoints/3", data=b""), 400, "invalid", mentions="empty")


class Outage:
    """A TCP forwarder in front of the web server that can drop every connection for a while."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.down = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if self.down.is_set():
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.server.close()


def test_sdk_buffers_metrics_through_an_outage(live_stack, team):
    from officina import sdk

    port = int(live_stack.url.rsplit(":", 1)[1])
    proxy = Outage(port)
    try:
        sdk.connect(f"http://127.0.0.1:{proxy.port}", live_stack.admin_token, timeout=5)
        run = sdk.init(project="outage", team=team, system_metrics=False)
        for step in range(300):
            run.log_metric("loss", 1 / (step + 1), step=step)
        assert run.flush(timeout=30)
        proxy.down.set()  # the server goes away for a while
        for step in range(300, 900):
            run.log_metrics({"loss": 1 / (step + 1), "acc": step / 900}, step=step)
        time.sleep(2.5)
        assert run.last_error is not None  # it did try, and failed
        proxy.down.clear()
        run.finish()
        summary = sdk.client().get(f"/runs/{run.id}/metrics")["metrics"]
        assert summary["loss"]["count"] == 900 and summary["acc"]["count"] == 600 and run.dropped == 0
        acc = sdk.client().get(f"/runs/{run.id}/metrics/acc?max_points=1000")
        assert [p[0] for p in acc["points"]] == list(range(300, 900))  # every point once, none lost
        assert sdk.tracking.get_run(run.id)["status"] == "finished"
    finally:
        proxy.close()
        sdk.connect(live_stack.url, "")


def test_sdk_run_params_artifacts_model_and_checkpoint(sdk_client, team, tmp_path):
    import torch

    sdk = sdk_client
    with sdk.init(project="sdk", name="tiny", params={"lr": 0.1}, team=team, system_metrics=False) as run:
        run.log_params({"layers": 2})
        for step in range(20):
            run.log_metrics({"loss": math.exp(-step / 5)}, step=step)
        (tmp_path / "notes.txt").write_text("hello")
        run.log_artifact(tmp_path / "notes.txt")
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        saved = run.log_model(model, example_input=torch.zeros(2, 4))
        assert saved["meta"]["format"] == "torchscript" and saved["kind"] == "model"
        sdk.checkpoint.save({"w": torch.ones(3)}, step=5)
        step, state = sdk.checkpoint.load()  # saved through torch: comes back loaded (weights_only)
        assert step == 5 and torch.equal(state["w"], torch.ones(3))
        sdk.checkpoint.save(b"\x00raw", step=7)
        assert sdk.checkpoint.load() == (7, b"\x00raw") and sdk.checkpoint.load(step=5, raw=True)[1][:2] == b"PK"
        with pytest.raises(sdk.InvalidRequest, match="finite"):
            run.log_metric("loss", float("nan"))
        with pytest.raises(sdk.InvalidRequest, match="key"):
            run.log_metric("bad\nkey", 1.0)
    record = sdk.tracking.get_run(run.id)
    assert record["status"] == "finished" and record["params"] == {"lr": 0.1, "layers": 2}
    assert record["metrics"]["loss"] == pytest.approx(math.exp(-19 / 5))
    points = sdk.tracking.history(run.id, "loss")
    assert len(points) == 20


def test_sdk_attached_to_a_runs_keeps_counting_its_steps(sdk_client, team, monkeypatch):
    """Inside a job (OFFICINA_RUN_ID), automatic steps continue after what the run already holds."""
    sdk = sdk_client
    first = sdk.init(project="attach", team=team, system_metrics=False)
    for value in (3.0, 2.0, 1.0):
        first.log_metric("loss", value)
    first.finish()
    monkeypatch.setenv("OFFICINA_RUN_ID", first.id)
    again = sdk.init(tags={"attempt": 2}, system_metrics=False)
    assert again.id == first.id and sdk.active_run() is again
    again.log_metric("loss", 0.5)
    again.log_metrics({"loss": 0.25, "acc": 0.9})
    again.finish()
    points = sdk.tracking.history(first.id, "loss")
    assert [p[:2] for p in points] == [[0, 3.0], [1, 2.0], [2, 1.0], [3, 0.5], [4, 0.25]]
    assert sdk.tracking.get_run(first.id)["tags"] == {"attempt": 2}


RESUMABLE = """
import os, signal, time
from officina import sdk

run = sdk.init()
state = sdk.checkpoint.load()
start = int(state[1]) + 1 if state else 0
print("attempt", os.environ["OFFICINA_ATTEMPT"], "starts at", start, flush=True)
for step in range(start, 12):
    run.log_metric("progress", step, step=step)
    run.log_metric("attempt", int(os.environ["OFFICINA_ATTEMPT"]), step=step)
    run.flush()
    sdk.checkpoint.save(str(step).encode(), step)
    if step == 5 and os.environ["OFFICINA_ATTEMPT"] == "1":
        # the point of step 5 was sent twice on purpose (re-logged after resume) ...
        run.log_metric("progress", 5, step=5)
        run.flush()
        os.kill(os.getppid(), signal.SIGKILL)   # ... and then the worker dies (kill -9)
        time.sleep(60)
run.finish()
"""


def test_killed_worker_resumes_from_checkpoint_without_duplicate_points(api, team, live_stack):
    jobs = Jobs(api, team)
    job = jobs.submit(RESUMABLE, max_retries=2)
    done = jobs.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded" and done["attempt"] == 2, (done, jobs.events(job["id"]))
    assert "attempt 2 starts at 6" in jobs.logs(job["id"], attempt=2)
    summary = api.get(f"/runs/{done['run_id']}/metrics").get_json()["metrics"]
    assert summary["progress"]["count"] == 12 and summary["progress"]["last"] == 11  # each step once
    history = api.get(f"/runs/{done['run_id']}/metrics/attempt").get_json()["points"]
    assert [int(v) for _, v, _ in history] == [1] * 6 + [2] * 6  # steps 0-5 from attempt 1, 6-11 resumed
    run = api.get(f"/runs/{done['run_id']}").get_json()["run"]
    assert run["status"] == "finished"
    logs = [a["path"] for a in api.get(f"/runs/{done['run_id']}/artifacts").get_json()["artifacts"]]
    assert "logs/attempt-2.txt" in logs
