"""The prediction server on the live stack: real models on sklearn digits, canary, shadow, hot swap,
prediction logs and every kind of bad input.

Model versions and deployments are inserted with SQL (the registry API is not what is tested here),
model files go to the real blob store, and the server learns of changes by NOTIFY, as it does from
the model service.
"""
from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections import Counter

import numpy as np
import pytest
import requests

torch = pytest.importorskip("torch")
from sklearn.datasets import load_digits  # noqa: E402

from checks import assert_error  # noqa: E402

CLASSES = [f"digit-{i}" for i in range(10)]


def digits_signature(names: list[str] | None = None) -> dict:
    return {"inputs": {"dtype": "float32", "shape": [-1, 64], "names": names},
            "outputs": {"dtype": "float32", "shape": [-1, 10]}, "task": "classification", "classes": CLASSES}


def train_mlp(seed: int, epochs: int) -> torch.nn.Module:
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def torchscript_bytes(net: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.zeros(2, 64)), buf)
    return buf.getvalue()


def onnx_bytes(net: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(2, 64),), buf, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})
    return buf.getvalue()


class Registry:
    """Rows of models, versions and deployments, written as the model service would."""

    def __init__(self, live_stack, team: str):
        from officina.platform.storage.blobs import BlobStore

        self.pool = live_stack.services.pool
        self.blobs = BlobStore(live_stack.services.store)
        with self.pool.connection() as conn:
            self.team_id = conn.execute("SELECT id FROM teams WHERE name = %s", (team,)).fetchone()[0]
        self.model_id = str(uuid.uuid4())
        self.model_name = f"digits-{self.model_id[:8]}"
        self.versions = 0
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO models (id, team_id, name) VALUES (%s, %s, %s)",
                         (self.model_id, self.team_id, self.model_name))

    def add_version(self, fmt: str, data: bytes, signature: dict) -> str:
        sha, _ = self.blobs.put_bytes(data)
        self.versions += 1
        version_id = str(uuid.uuid4())
        with self.pool.connection() as conn:
            conn.execute("INSERT INTO model_versions (id, model_id, version, format, sha256, size, signature) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (version_id, self.model_id, self.versions, fmt, sha, len(data), json.dumps(signature)))
        return version_id

    def deploy(self, name: str, spec: dict) -> int:
        """Create or change deployment ``name``; returns its new revision."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO deployments (id, team_id, name, spec) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, revision = deployments.revision + 1, "
                "updated_at = now() RETURNING revision",
                (str(uuid.uuid4()), self.team_id, name, json.dumps(spec))).fetchone()
            conn.execute("SELECT pg_notify('officina_deployments', %s)", (name,))
        return row[0]


def spec(*routes: tuple[str, int], shadow: str | None = None, **extra) -> dict:
    return {"routes": [{"version_id": v, "weight": w} for v, w in routes], "shadow": shadow,
            "max_batch_size": 32, "max_wait_ms": 2, "log_sample": 1.0, **extra}


class Client:
    def __init__(self, url: str, token: str | None):
        self.url, self.session = url, requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def predict(self, name: str, body, **kw) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.session.post(f"{self.url}/v1/deployments/{name}/predict", data=data,
                                 headers={"Content-Type": "application/json"}, timeout=30, **kw)

    def wait_revision(self, name: str, revision: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            response = self.session.get(f"{self.url}/v1/deployments/{name}", timeout=10)
            if response.status_code == 200 and response.json()["deployment"]["revision"] >= revision:
                return response.json()["deployment"]
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} revision {revision} not loaded: {response.text}")
            time.sleep(0.1)


class Resp:
    """requests' response seen through the Flask-response interface ``assert_error`` reads."""

    def __init__(self, response: requests.Response):
        self.status_code, self._r = response.status_code, response

    def get_json(self):
        return self._r.json()

    def get_data(self, as_text=False):
        return self._r.text


@pytest.fixture(scope="module")
def world(live_stack):
    team = live_stack.make_team()
    _, _, token = live_stack.make_user(team, role="viewer")
    registry = Registry(live_stack, team)
    nets = {1: train_mlp(0, 150), 2: train_mlp(1, 40)}
    v1 = registry.add_version("torchscript", torchscript_bytes(nets[1]), digits_signature())
    v2 = registry.add_version("onnx", onnx_bytes(nets[2]), digits_signature())
    named = registry.add_version("torchscript", torchscript_bytes(nets[1]),
                                 digits_signature([f"px{i}" for i in range(64)]))
    client = Client(live_stack.settings.predict_url, token)
    prefix = f"d{uuid.uuid4().hex[:6]}"
    return {"registry": registry, "client": client, "v1": v1, "v2": v2, "named": named, "nets": nets,
            "prefix": prefix, "team": team, "live": live_stack}


def deployed(world, suffix: str, body: dict) -> str:
    name = f"{world['prefix']}-{suffix}"
    world["client"].wait_revision(name, world["registry"].deploy(name, body))
    return name


def logs(live_stack, name: str) -> list[tuple]:
    with live_stack.services.pool.connection() as conn:
        return conn.execute(
            "SELECT l.version_id::text, l.shadow, l.request_id, l.latency_ms, l.inputs, l.outputs "
            "FROM prediction_logs l JOIN deployments d ON d.id = l.deployment_id WHERE d.name = %s", (name,)
        ).fetchall()


def wait_logs(live_stack, name: str, count: int, timeout: float = 15) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while True:
        rows = logs(live_stack, name)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_predict_matches_torch_on_real_digits(world):
    name = deployed(world, "main", spec((world["v1"], 100)))
    data = load_digits()
    x = (data.data[:60] / 16.0).astype(np.float32)
    response = world["client"].predict(name, {"rows": x.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    with torch.no_grad():
        expected = world["nets"][1](torch.from_numpy(x)).numpy()
    assert body["predictions"] == [CLASSES[i] for i in expected.argmax(1)]
    assert np.allclose(np.array(body["outputs"]), expected, atol=1e-4)
    assert np.mean(expected.argmax(1) == data.target[:60]) > 0.9  # a real model, not noise
    registry = world["registry"]
    assert body["model"] == {"name": registry.model_name, "version": 1}
    assert body["deployment"] == name and body["request_id"]
    assert response.headers["X-Model-Version"] == f"{registry.model_name}:1"

    described = world["client"].session.get(f"{world['client'].url}/v1/deployments/{name}", timeout=10).json()
    assert described["deployment"]["routes"][0]["version"] == 1
    assert described["deployment"]["signature"]["inputs"]["shape"] == [-1, 64]
    health = requests.get(f"{world['client'].url}/healthz", timeout=10).json()
    assert health["deployments"][name]["revision"] >= 1 and "dropped" in health["prediction_log"]

    rows = wait_logs(world["live"], name, 1)
    assert len(rows) == 1
    version_id, shadow, request_id, latency_ms, inputs, outputs = rows[0]
    assert version_id == world["v1"] and shadow is False and request_id == body["request_id"]
    assert latency_ms > 0 and np.allclose(inputs, x.tolist()) and outputs["predictions"] == body["predictions"]


def test_onnx_version_and_named_rows(world):
    name = deployed(world, "onnx", spec((world["v2"], 100)))
    x = (load_digits().data[:5] / 16.0).astype(np.float32)
    body = world["client"].predict(name, {"rows": x.tolist()}).json()
    with torch.no_grad():
        assert np.allclose(body["outputs"], world["nets"][2](torch.from_numpy(x)).numpy(), atol=1e-4)
    named = deployed(world, "named", spec((world["named"], 100)))
    rows = [{f"px{i}": float(v) for i, v in enumerate(row)} for row in x]
    by_name = world["client"].predict(named, {"rows": rows})
    by_list = world["client"].predict(named, {"rows": x.tolist()})
    assert by_name.status_code == 200 and by_name.json()["outputs"] == by_list.json()["outputs"]

    del rows[0]["px7"]
    assert_error(Resp(world["client"].predict(named, {"rows": rows})), 400, "invalid",
                 mentions="rows[0] is missing field 'px7'")
    rows[0]["px7"], rows[0]["bogus"] = 0.0, 1.0
    assert_error(Resp(world["client"].predict(named, {"rows": rows})), 400, "invalid",
                 mentions="rows[0] has unknown field 'bogus'")


def test_canary_split_follows_weights(world):
    name = deployed(world, "canary", spec((world["v1"], 90), (world["v2"], 10), log_sample=0.0))
    row = (load_digits().data[:1] / 16.0).tolist()
    seen = Counter()
    for _ in range(300):
        response = world["client"].predict(name, {"rows": row})
        assert response.status_code == 200, response.text
        seen[response.json()["model"]["version"]] += 1
    assert set(seen) == {1, 2}
    assert 10 <= seen[2] <= 60, seen  # expected 30
    time.sleep(1.0)
    assert logs(world["live"], name) == []  # log_sample 0: nothing logged


def test_shadow_is_logged_never_returned(world):
    name = deployed(world, "shadow", spec((world["v1"], 100), shadow=world["v2"]))
    x = load_digits().data[:20] / 16.0
    ids = set()
    for row in x:
        response = world["client"].predict(name, {"rows": [row.tolist()]})
        assert response.status_code == 200 and response.json()["model"]["version"] == 1
        ids.add(response.json()["request_id"])
    rows = wait_logs(world["live"], name, 40)
    shadow = [r for r in rows if r[1]]
    primary = [r for r in rows if not r[1]]
    assert len(shadow) == 20 and len(primary) == 20
    assert {r[0] for r in shadow} == {world["v2"]} and {r[0] for r in primary} == {world["v1"]}
    assert {r[2] for r in shadow} == ids and all(len(r[5]["predictions"]) == 1 for r in shadow)


def test_hot_swap_under_load_drops_nothing(world):
    name = deployed(world, "swap", spec((world["v1"], 100), log_sample=0.0))
    row = {"rows": (load_digits().data[:3] / 16.0).tolist()}
    errors, versions, stop = [], Counter(), threading.Event()
    after_swap = Counter()
    swapped = threading.Event()

    def fire():
        client = Client(world["client"].url, None)
        client.session.headers.update(world["client"].session.headers)
        while not stop.is_set():
            sent_after_swap = swapped.is_set()
            try:
                response = client.predict(name, row)
                if response.status_code != 200:
                    errors.append(response.text)
                    continue
                version = response.json()["model"]["version"]
                versions[version] += 1
                if sent_after_swap:
                    after_swap[version] += 1
            except requests.RequestException as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    revision = world["registry"].deploy(name, spec((world["v2"], 100), log_sample=0.0))
    world["client"].wait_revision(name, revision)
    swapped.set()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert versions[1] > 0 and versions[2] > 0, versions
    assert after_swap[1] == 0 and after_swap[2] > 0, after_swap


def test_bad_requests(world, live_stack):
    name = deployed(world, "bad", spec((world["v1"], 100)))
    client = world["client"]
    good = [0.0] * 64

    def error(response, status, code, mentions=None):
        assert_error(Resp(response), status, code, mentions=mentions)

    error(client.predict(name, {"rows": [good, good[:63]]}), 400, "invalid",
          mentions="rows[1] has 63 values; expected 64 (inputs dtype float32, shape [-1, 64]")
    error(client.predict(name, {"rows": [good[:3] + ["seven"] + good[4:]]}), 400, "invalid",
          mentions="rows[0][3] is a string")
    error(client.predict(name, {"rows": [{"a": 1}]}), 400, "invalid", mentions="rows[0] is an object")
    error(client.predict(name, {"rows": []}), 400, "invalid")
    error(client.predict(name, {"rows": good}), 400, "invalid", mentions="rows[0] is float")
    error(client.predict(name, {"inputs": [good]}), 400, "invalid", mentions='"rows"')
    error(client.predict(name, {"rows": [good], "extra": 1}), 400, "invalid", mentions="'extra'")
    error(client.predict(name, b"{not json"), 400, "invalid", mentions="JSON")
    error(client.predict(name, b"\xff\xfe"), 400, "invalid")
    limit = live_stack.settings.serving_max_rows
    error(client.predict(name, {"rows": [good] * (limit + 1)}), 413, "too_large", mentions=f"limit of {limit} rows")
    error(client.predict(f"{name}-nope", {"rows": [good]}), 404, "not_found", mentions="not found")
    error(Client(client.url, None).predict(name, {"rows": [good]}), 401, "unauthenticated")
    error(Client(client.url, "off_not-a-real-token").predict(name, {"rows": [good]}), 401, "unauthenticated")
    _, _, outsider = live_stack.make_user(live_stack.make_team())
    error(Client(client.url, outsider).predict(name, {"rows": [good]}), 404, "not_found",
          mentions=f"deployment {name!r} not found")
    response = client.session.get(f"{client.url}/v1/deployments/{name}/predict", timeout=10)
    error(response, 405, "method_not_allowed")
    assert client.predict(name, {"rows": [good, [None] * 64]}).status_code == 200  # null is NaN for floats
