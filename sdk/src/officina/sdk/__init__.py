"""Officina's Python SDK: ``from officina import sdk``.

Connects with ``OFFICINA_URL`` and ``OFFICINA_TOKEN`` from the environment, or
``sdk.connect(url, token)``. API errors raise the typed exceptions in ``sdk.errors``.
"""
from __future__ import annotations

from typing import Any

from officina.sdk import errors
from officina.sdk.client import Client
from officina.sdk.errors import (ConnectionFailed, Conflict, Forbidden, InvalidRequest, NotFound,
                                 OfficinaError, ServerError, TooLarge, Unauthenticated)

__version__ = "0.1.0"
__all__ = ["Client", "connect", "login", "whoami", "client", "tokens", "teams", "datasets", "jobs", "submit",
           "Job", "admin", "init", "Run", "active_run", "tracking", "checkpoint", "errors", "tuning", "tune",
           "Study", "models", "deployments",
           "OfficinaError", "InvalidRequest", "Unauthenticated", "Forbidden", "NotFound", "Conflict",
           "TooLarge", "ServerError", "ConnectionFailed"]

_client: Client | None = None


def connect(url: str | None = None, token: str | None = None, *, timeout: float = 30.0) -> Client:
    """Point the SDK at a server (defaults: ``OFFICINA_URL``, ``OFFICINA_TOKEN``)."""
    global _client
    _client = Client(url, token, timeout=timeout)
    return _client


def client() -> Client:
    """The SDK's current connection, made from the environment on first use."""
    return _client or connect()


def login(url: str | None, username: str, password: str, token_name: str = "sdk login") -> str:
    """Log in with a username and password, connect with the new token, and return it."""
    anonymous = Client(url, token="")
    body = anonymous.post("/auth/login", {"username": username, "password": password,
                                          "token_name": token_name}, auth=False)
    connect(anonymous.url, body["token"])
    return body["token"]


def whoami() -> dict[str, Any]:
    """The caller's user, teams with roles, and token."""
    return client().get("/whoami")


from officina.sdk import admin, checkpoint, datasets, deployments, jobs, models, teams, tokens, tracking, tuning  # noqa: E402  (areas use client())
from officina.sdk.jobs import Job, submit  # noqa: E402
from officina.sdk.tracking import Run, active_run, init  # noqa: E402
from officina.sdk.tuning import Study, tune  # noqa: E402
