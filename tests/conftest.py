"""Fixtures shared by the integration and browser tests: one real embedded stack per session.

``live_stack`` starts real PostgreSQL, S3 (SeaweedFS), Redis, a gunicorn web server and a Celery
worker on free ports in a temp dir, exactly as ``officina up`` does. Nothing is mocked.
"""
from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass

import pytest

_counter = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(prefix: str) -> str:
    """A name no other test in this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@dataclass
class LiveStack:
    url: str
    settings: object  # the resolved officina.platform.settings.Settings
    services: object  # officina.platform.services.Services, opened in the test process
    admin_username: str
    admin_password: str
    admin_token: str
    stack: object = None  # officina.infra.stack.Stack: tests may start or kill processes of it

    def make_user(self, team: str | None = None, role: str = "member", *, is_admin: bool = False):
        """A new user (optionally in ``team`` with ``role``) and an API token for them."""
        username = unique("user")
        user, password = self.services.auth.create_user(username, is_admin=is_admin, team=team, role=role)
        _, token = self.services.auth.create_token(user.id, "test")
        return username, password, token

    def make_team(self) -> str:
        name = unique("team")
        self.services.auth.create_team(None, name)
        return name


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory):
    """The whole platform on the embedded stack, for the session."""
    for key in [k for k in os.environ if k.startswith("OFFICINA_")]:
        if key != "OFFICINA_REQUIRE_BROWSER":
            del os.environ[key]  # tests run on their own stack, never a configured one
    from officina.infra.stack import Stack
    from officina.platform.auth.service import AuthService
    from officina.platform.db import migrate
    from officina.platform.services import Services
    from officina.platform.settings import Settings

    home = tmp_path_factory.mktemp("officina-home")
    # Short leases and sweeps keep the worker-loss tests quick; the protocol is the same as production's.
    settings = Settings(home=home, web_port=free_port(), web_workers=2, worker_processes=1,
                        worker_concurrency=3, log_level="WARNING", job_lease_s=6.0, job_sweep_s=1.0,
                        worker_lost_s=6.0, scheduler_interval_s=1.0, preempt_grace_s=5.0,
                        serving_port=free_port(), serving_processes=1, serving_threads=32,
                        serving_reload_s=0.5)
    stack = Stack(settings)
    try:
        resolved = stack.start_services()
        migrate(resolved.database_url)
        services = Services.open(resolved, pool_size=4)
        password = AuthService(services.pool).bootstrap_admin()
        stack.start("web")
        stack.start("worker")
        stack.start("beat")
        stack.start("scheduler")
        stack.start("serving")
        admin = services.auth.get_user("admin")
        _, token = services.auth.create_token(admin.id, "tests")
        yield LiveStack(url=resolved.url, settings=resolved, services=services,
                        admin_username="admin", admin_password=password, admin_token=token,
                        stack=stack)
        services.close()
    finally:
        stack.stop()
