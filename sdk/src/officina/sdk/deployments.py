"""Deployments: ``sdk.deployments.create()``, ``.get()``, and ``Deployment.predict(rows)``.

A deployment routes a name to model versions by weight (canary), with an optional shadow version;
predictions go to the serving process at ``deployment.url``.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from officina import sdk
from officina.sdk.errors import ConnectionFailed, error_for
from officina.sdk.teams import resolve


def _route(ref: Any) -> dict[str, Any]:
    """``"digits:3"``, ``("digits", 3)`` or a dict, as ``{"model", "version"}``."""
    if isinstance(ref, dict):
        return dict(ref)
    if isinstance(ref, str):
        model, _, version = ref.partition(":")
        return {"model": model, "version": version or "latest"}
    model, version = ref
    return {"model": model, "version": version}


class Deployment:
    """A deployment: its routes, revisions, and ``predict``."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def url(self) -> str:
        return self.data["url"]

    @property
    def revision(self) -> int:
        return self.data["revision"]

    @property
    def routes(self) -> list[dict[str, Any]]:
        return self.data["routes"]

    def refresh(self) -> "Deployment":
        self.data = sdk.client().get(f"/deployments/{quote(self.name, safe='')}")["deployment"]
        return self

    def update(self, *, routes: list | None = None, shadow: Any = ..., note: str | None = None,
               **settings: Any) -> "Deployment":
        """Change routes (``[("digits", 3, 90), ("digits", 4, 10)]`` or dicts), the shadow (None removes it),
        or ``max_batch_size``, ``max_wait_ms``, ``log_sample``: a new revision, picked up without downtime."""
        body: dict[str, Any] = dict(settings)
        if routes is not None:
            body["routes"] = [_weighted(r) for r in routes]
        if shadow is not ...:
            body["shadow"] = None if shadow is None else _route(shadow)
        if note:
            body["note"] = note
        sdk.client().request("PATCH", f"/deployments/{quote(self.name, safe='')}", json=body)
        return self.refresh()

    def rollback(self, revision: int | None = None) -> "Deployment":
        """Back to an earlier revision's routes (default: the previous one), as a new revision."""
        body = {} if revision is None else {"revision": revision}
        sdk.client().post(f"/deployments/{quote(self.name, safe='')}/rollback", body)
        return self.refresh()

    def delete(self) -> None:
        sdk.client().delete(f"/deployments/{quote(self.name, safe='')}")

    def predict(self, rows: list, *, timeout: float = 30.0) -> dict[str, Any]:
        """Send rows (lists of numbers, or dicts by feature name) to the serving process; the answer has
        ``predictions`` and the ``model`` version that made them."""
        client = sdk.client()
        try:
            response = client.session.post(self.url, json={"rows": rows}, timeout=timeout,
                                           headers={"Authorization": f"Bearer {client.token}"})
        except requests.RequestException as exc:
            raise ConnectionFailed(f"cannot reach the prediction server at {self.url}: "
                                   f"{exc.__class__.__name__}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_for(response.status_code, body)
        return response.json()

    def predictions(self, limit: int = 50, shadow: bool | None = None) -> list[dict[str, Any]]:
        """The latest logged predictions (inputs, outputs, latency, version; shadow ones too)."""
        params: dict[str, Any] = {"limit": limit}
        if shadow is not None:
            params["shadow"] = "true" if shadow else "false"
        return sdk.client().get(f"/deployments/{quote(self.name, safe='')}/predictions", params=params)["predictions"]

    def __repr__(self) -> str:
        routes = ", ".join(f"{r['model']}:{r['version']}={r['weight']}%" for r in self.routes)
        return f"<Deployment {self.name} r{self.revision} {routes}>"


def _weighted(route: Any) -> dict[str, Any]:
    if isinstance(route, (tuple, list)) and len(route) == 3:
        return {"model": route[0], "version": route[1], "weight": route[2]}
    return _route(route)


def create(name: str, routes: list, *, shadow: Any = None, team: str | None = None, **settings: Any) -> Deployment:
    """Deploy: ``create("digits", [("digits", 3, 100)])`` or ``[("digits", 3, 90), ("digits", 4, 10)]``;
    ``shadow="digits:5"``; settings ``max_batch_size``, ``max_wait_ms``, ``log_sample``."""
    body: dict[str, Any] = {"name": name, "routes": [_weighted(r) for r in routes], **settings}
    if shadow is not None:
        body["shadow"] = _route(shadow)
    sdk.client().post(f"/teams/{quote(resolve(team), safe='')}/deployments", body)
    return get(name)


def get(name: str) -> Deployment:
    return Deployment(sdk.client().get(f"/deployments/{quote(name, safe='')}")["deployment"])


def list(team: str | None = None) -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.deployments.list()
    return sdk.client().get(f"/teams/{quote(resolve(team), safe='')}/deployments")["deployments"]
