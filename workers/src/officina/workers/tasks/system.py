"""System tasks: the ping the health check round-trips."""
from __future__ import annotations

import socket

from officina.platform.tasks import PING
from officina.workers.app import app


@app.task(name=PING, bind=True, acks_late=False)
def ping(self) -> dict:
    """Answer the health check with this worker's name."""
    return {"pong": True, "worker": self.request.hostname or socket.gethostname()}
