"""The embedded platform for benchmarks: started in a temp dir, exactly as ``officina up`` runs it."""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BenchStack:
    url: str
    token: str
    settings: object   # the resolved officina.platform.settings.Settings
    services: object   # officina.platform.services.Services, open while the stack runs


@contextlib.contextmanager
def embedded(*, processes: tuple[str, ...] = ("web", "worker"), **settings) -> Iterator[BenchStack]:
    """Start PostgreSQL, S3, Redis and ``processes``; yield an admin token and open services; stop it all."""
    for key in [k for k in os.environ if k.startswith("OFFICINA_")]:
        del os.environ[key]  # a benchmark runs on its own stack, never a configured one
    from officina.infra.stack import Stack
    from officina.platform.auth.service import AuthService
    from officina.platform.db import migrate
    from officina.platform.services import Services
    from officina.platform.settings import Settings

    with tempfile.TemporaryDirectory(prefix="officina-bench-") as home:
        stack = Stack(Settings(home=Path(home), web_port=free_port(), log_level="WARNING", **settings))
        services = None
        try:
            resolved = stack.start_services()
            migrate(resolved.database_url)
            services = Services.open(resolved, pool_size=2)
            AuthService(services.pool).bootstrap_admin()
            for kind in processes:
                stack.start(kind)
            _, token = services.auth.create_token(services.auth.get_user("admin").id, "bench")
            yield BenchStack(resolved.url, token, resolved, services)
        finally:
            if services is not None:
                services.close()
            stack.stop()
