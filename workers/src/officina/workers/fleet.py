"""This worker in the fleet: what it offers (CPUs, memory, GPUs or simulated ones) and its heartbeat."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from officina.platform.fleet.service import FleetService, heartbeat_every

logger = logging.getLogger(__name__)


def detect_gpus(simulated: int = 0) -> list[dict[str, Any]]:
    """This machine's GPUs (index, model, memory) through torch when present, else ``simulated`` fake ones."""
    if simulated:
        return [{"index": i, "model": "simulated GPU", "memory_mb": 0, "simulated": True} for i in range(simulated)]
    try:
        import torch  # workers have torch; web never calls this
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"index": i, "model": props.name, "memory_mb": props.total_memory // 2**20, "simulated": False})
    return out


def machine() -> dict[str, Any]:
    """Host name, CPUs and memory of this machine."""
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "cpus": os.cpu_count() or 1,
            "memory_mb": psutil.virtual_memory().total // 2**20}


class Membership:
    """Registers the worker on start, heartbeats from a thread, and says goodbye on shutdown."""

    def __init__(self, fleet: FleetService, name: str, queues: list[str], simulated_gpus: int = 0,
                 lost_after_s: float = 30.0):
        self.fleet, self.name, self.queues = fleet, name, queues
        self.every = heartbeat_every(lost_after_s)
        self.gpus = detect_gpus(simulated_gpus)
        self._stop = threading.Event()

    def start(self) -> None:
        self.fleet.register(self.name, self.queues, self.gpus, machine())
        logger.info("registered %s: queues %s, %d GPU(s)%s", self.name, ",".join(self.queues), len(self.gpus),
                    " (simulated)" if any(g["simulated"] for g in self.gpus) else "")
        threading.Thread(target=self._beat, name="officina-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.fleet.heartbeat(self.name)
            except Exception:  # the database may be restarting; the next beat tries again
                logger.warning("heartbeat of %s failed", self.name, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.fleet.stopped(self.name)
        except Exception:
            logger.warning("could not mark %s stopped", self.name, exc_info=True)
