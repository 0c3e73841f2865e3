"""Free TCP ports on 127.0.0.1 for the embedded services, remembered across restarts."""
from __future__ import annotations

import json
import logging
import os
import random
import socket
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

#: Ports other servers commonly hold; never picked.
STANDARD_PORTS = frozenset(
    {3000, 5000, 5432, 5555, 6379, 8000, 8080, 8081, 8181, 8333, 8443, 8888, 9000, 9001,
     9090, 9101, 9333, 18080, 18333, 18888, 19333, 27017}
)
# Below Linux's default ephemeral range (32768-60999), so outgoing connections do not take a
# remembered port between restarts.
_LOW, _HIGH = 20000, 32767


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(exclude: Iterable[int] = (), host: str = "127.0.0.1") -> int:
    excluded = set(exclude) | STANDARD_PORTS
    for _ in range(200):
        port = random.randint(_LOW, _HIGH)
        if port not in excluded and port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # fall back on the kernel
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PortFile:
    """``<home>/run/ports.json``: ports chosen per service, reused while still free."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._ports: dict[str, int] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            self._ports = {}

    def get(self, names: Iterable[str]) -> dict[str, int]:
        """Ports for ``names``: each remembered one that is still free, new ones for the rest.

        Keeping what can be kept matters to the S3 server, whose cluster metadata names its ports.
        """
        names = list(names)
        taken = {p for n, p in self._ports.items() if n not in names}
        chosen: dict[str, int] = {}
        for name in names:
            port = self._ports.get(name)
            if port is not None and port not in taken and port_is_free(port):
                chosen[name] = port
        for name in names:
            if name not in chosen:
                if name in self._ports:
                    logger.warning("port %d for %s is taken; picking another", self._ports[name], name)
                chosen[name] = pick_free_port(taken | set(chosen.values()))
        if any(self._ports.get(n) != p for n, p in chosen.items()):
            self._ports.update(chosen)
            self._save()
        return chosen

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._ports, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
