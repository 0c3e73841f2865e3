"""Assertions shared by the integration tests."""
from __future__ import annotations

import time


def assert_error(response, status: int, code: str, *, mentions: str | None = None) -> dict:
    """The response is the one JSON error shape with this status and code."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body
    assert isinstance(body["error"]["details"], dict)
    if mentions:
        assert mentions in body["error"]["message"], body
    return body["error"]


def wait_until(predicate, timeout: float = 60.0, every: float = 0.2):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")
