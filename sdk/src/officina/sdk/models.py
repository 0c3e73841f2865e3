"""The model registry: ``sdk.models.register()``, ``.get()``, versions that evaluate, promote and export,
and batch prediction. Deployments are in ``sdk.deployments``."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk.errors import InvalidRequest
from officina.sdk.teams import resolve

EXPORT_FORMATS = ("onnx", "torchscript", "onnx_int8")


def _path(team: str, name: str, rest: str = "") -> str:
    return f"/teams/{quote(team, safe='')}/models/{quote(name, safe='')}{rest}"


def _wait(fetch, done, timeout: float | None, poll: float, what: str):
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not finished after {timeout} s")
        time.sleep(poll)


class ModelVersion:
    """One registered version: ``.evaluate()``, ``.gates()``, ``.promote()``, ``.export()``, ``.download()``,
    ``.predict_batch()``."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def version(self) -> int:
        return self.data["version"]

    @property
    def team(self) -> str:
        return self.data["team"]

    @property
    def aliases(self) -> list[str]:
        return [*(self.data.get("aliases") or [])]

    @property
    def signature(self) -> dict[str, Any]:
        return self.data["signature"]

    @property
    def lineage(self) -> dict[str, Any]:
        return self.data.get("lineage") or {}

    @property
    def exports(self) -> dict[str, dict[str, Any]]:
        return {e["format"]: e for e in self.data.get("exports") or []}

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return [*(self.data.get("evaluations") or [])]

    def _url(self, rest: str = "") -> str:
        return _path(self.team, self.model, f"/versions/{self.version}{rest}")

    def refresh(self) -> "ModelVersion":
        self.data = sdk.client().get(self._url())["version"]
        return self

    def evaluate(self, target_alias: str = "production", *, wait: bool = True, timeout: float | None = 600,
                 poll: float = 1.0) -> dict[str, Any]:
        """Evaluate this version under the model's gate policy (a worker does it); with ``wait`` return the
        finished evaluation (results, gates, passed)."""
        evaluation = sdk.client().post(self._url("/evaluations"), {"target_alias": target_alias})["evaluation"]
        if not wait:
            return evaluation
        return _wait(lambda: sdk.client().get(f"/evaluations/{evaluation['id']}")["evaluation"],
                     lambda e: e["state"] in ("succeeded", "failed"), timeout, poll, "the evaluation")

    def gates(self, alias: str = "production") -> dict[str, Any]:
        """The gates as promotion to ``alias`` would judge them now."""
        return sdk.client().get(self._url("/gates"), params={"alias": alias})

    def promote(self, alias: str, *, override_reason: str | None = None) -> dict[str, Any]:
        """Move ``alias`` here if the gates pass (else ``Conflict`` with the failing gates in ``details``);
        a team admin may override with a reason."""
        body: dict[str, Any] = {"alias": alias}
        if override_reason:
            body["override_reason"] = override_reason
        result = sdk.client().post(self._url("/promote"), body)
        self.refresh()
        return result

    def export(self, fmt: str = "onnx", *, wait: bool = True, timeout: float | None = 600,
               poll: float = 1.0) -> dict[str, Any]:
        """Export to ``onnx``, ``torchscript`` or ``onnx_int8`` (size, latency and parity in ``report``)."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(EXPORT_FORMATS)}")
        export = sdk.client().post(self._url("/exports"), {"format": fmt})["export"]
        if not wait:
            return export
        return _wait(lambda: self.refresh().exports[fmt], lambda e: e["state"] in ("succeeded", "failed"),
                     timeout, poll, f"the {fmt} export")

    def download(self, path: str | Path, fmt: str | None = None) -> Path:
        """Save the version's file (or a finished export's, ``fmt``) to ``path`` (a file or a directory)."""
        response = sdk.client().request_raw("GET", self._url("/file"), params={"format": fmt} if fmt else None)
        target = Path(path)
        if target.is_dir():
            disposition = response.headers.get("Content-Disposition", "")
            filename = disposition.split("filename=")[-1].strip('"') or f"{self.model}-v{self.version}"
            target = target / filename
        target.write_bytes(response.content)
        return target

    def predict_batch(self, dataset: str, dataset_version: int | str = "latest", *, output: str | None = None,
                      wait: bool = True, timeout: float | None = 600, poll: float = 1.0) -> dict[str, Any]:
        """Score a whole dataset version; the predictions become a new version of dataset ``output``."""
        body = {"model": self.model, "version": self.version, "dataset": dataset,
                "dataset_version": dataset_version}
        if output:
            body["output"] = output
        batch = sdk.client().post(f"/teams/{quote(self.team, safe='')}/batch-predictions", body)["batch"]
        if not wait:
            return batch
        return _wait(lambda: sdk.client().get(f"/batch-predictions/{batch['id']}")["batch"],
                     lambda b: b["state"] in ("succeeded", "failed"), timeout, poll, "the batch prediction")

    def __repr__(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        return f"<ModelVersion {self.team}/{self.model} v{self.version}{aliases}>"


def create(name: str, *, gate_policy: dict | None = None, description: str = "", team: str | None = None
           ) -> dict[str, Any]:
    """Create a model (``register`` creates one on first use too)."""
    body: dict[str, Any] = {"name": name, "description": description}
    if gate_policy is not None:
        body["gate_policy"] = gate_policy
    return sdk.client().post(f"/teams/{quote(resolve(team), safe='')}/models", body)["model"]


def set_policy(name: str, policy: dict, *, team: str | None = None) -> dict[str, Any]:
    """Replace a model's gate policy (see docs/models.md)."""
    return sdk.client().put(_path(resolve(team), name, "/policy"), policy)["model"]


def register(name: str, model: Any, *, example_input: Any = None, signature: dict | None = None,
             description: str = "", team: str | None = None) -> ModelVersion:
    """Register a new version of ``name`` from a torch module (traced with ``example_input``), or a
    TorchScript (``.pt``) or ONNX (``.onnx``) file path. Pickled files are refused by the server."""
    team = resolve(team)
    if isinstance(model, (str, Path)):
        data = Path(model).read_bytes()
    else:
        try:
            import torch
        except ImportError:
            raise InvalidRequest("register takes a file path, or a torch module when torch is installed") from None
        if not isinstance(model, torch.nn.Module) or example_input is None:
            raise InvalidRequest("register a torch.nn.Module with an example_input, or a .pt/.onnx file path")
        from officina.sdk.tracking import _signature

        buf = io.BytesIO()
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model.eval(), example_input), buf)
            signature = signature or _signature(example_input, model(example_input), {})
        data = buf.getvalue()
    form = {"description": description}
    if signature is not None:
        form["signature"] = json.dumps(signature)
    response = sdk.client().request("POST", _path(team, name, "/versions"), files={"file": ("model", data)},
                                    data=form)
    return ModelVersion(response["version"])


def get(name: str, version: int | str = "latest", *, team: str | None = None) -> ModelVersion:
    """A version by number, ``latest`` or alias (``production``)."""
    return ModelVersion(sdk.client().get(_path(resolve(team), name, f"/versions/{quote(str(version), safe='')}"))
                        ["version"])


def info(name: str, *, team: str | None = None) -> dict[str, Any]:
    """A model with its policy, aliases, promotions and versions."""
    return sdk.client().get(_path(resolve(team), name))


def list(team: str | None = None) -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.models.list()
    return sdk.client().get(f"/teams/{quote(resolve(team), safe='')}/models")["models"]
