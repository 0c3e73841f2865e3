"""The HTTP client behind the SDK."""
from __future__ import annotations

import os
import threading
from typing import Any

import requests

from officina.sdk.errors import ConnectionFailed, OfficinaError, error_for

DEFAULT_URL = "http://127.0.0.1:8080"


class Client:
    """A connection to one Officina server with one API token."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0):
        self.url = (url or os.environ.get("OFFICINA_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("OFFICINA_TOKEN")
        self.timeout = timeout
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session (sessions are not shared across threads)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = "officina-sdk/0.1"
        return session

    def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                auth: bool = True, **kwargs: Any) -> Any:
        """Call ``/api/v1<path>``; return the decoded JSON (None for 204).

        Raises:
            OfficinaError: a subclass matching the server's error code, with its message.
        """
        response = self.request_raw(method, path, json=json, params=params, auth=auth, **kwargs)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError:
            raise OfficinaError(f"the server at {self.url} did not answer with JSON",
                                status=response.status_code) from None

    def request_raw(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                    auth: bool = True, **kwargs: Any) -> requests.Response:
        """Call ``/api/v1<path>`` and return the successful response as it is (for file bodies).

        Raises:
            OfficinaError: a subclass matching the server's error code, with its message.
        """
        headers = kwargs.pop("headers", {})
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.session.request(method, f"{self.url}/api/v1{path}", json=json, params=params,
                                            headers=headers, timeout=kwargs.pop("timeout", self.timeout), **kwargs)
        except requests.ConnectionError as exc:
            raise ConnectionFailed(f"cannot reach Officina at {self.url}: {exc.__class__.__name__}") from None
        except requests.Timeout:
            raise ConnectionFailed(f"Officina at {self.url} did not answer within {self.timeout} s") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_for(response.status_code, body)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)
