"""Tuning: drive studies (tell finished trials, prune, launch new ones). A thin wrapper over the platform."""
from __future__ import annotations

import logging

from officina.platform.tasks import TUNING_DRIVE
from officina.workers.app import app, services

logger = logging.getLogger(__name__)


@app.task(name=TUNING_DRIVE, acks_late=False)
def drive(study_id: str | None = None) -> dict:
    """One step of the given study, or of every running one (from beat)."""
    studies = services().studies
    done = {}
    for sid in [study_id] if study_id else studies.running():
        try:
            done[sid] = studies.drive(sid)
        except Exception:  # one broken study must not stop the others
            logger.exception("could not drive study %s", sid)
    return done
