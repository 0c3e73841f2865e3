"""Flask-style fixtures over the live stack: ``app``, ``client``, ``api``, ``sdk_client``."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def app(live_stack):
    """The web app built in this process on the live stack's services."""
    from officina.web.app import create_app

    return create_app(live_stack.settings, services=live_stack.services)


@pytest.fixture
def client(app):
    return app.test_client()


class Api:
    """A test client that speaks JSON with a bearer token."""

    def __init__(self, client, token: str | None):
        self.client, self.token = client, token

    def call(self, method: str, path: str, json=None, token: str | None = "default", **kwargs):
        headers = kwargs.pop("headers", {})
        token = self.token if token == "default" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(f"/api/v1{path}", method=method, json=json, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.call("POST", path, json=json, **kw)

    def put(self, path, json=None, **kw):
        return self.call("PUT", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest.fixture
def api(client, live_stack):
    """JSON API client authenticated as the admin."""
    return Api(client, live_stack.admin_token)


@pytest.fixture
def anon_api(client):
    return Api(client, None)


@pytest.fixture
def sdk_client(live_stack):
    """The public SDK connected to the live gunicorn server as the admin."""
    from officina import sdk

    sdk.connect(live_stack.url, live_stack.admin_token)
    yield sdk
    sdk.connect(live_stack.url, "")

