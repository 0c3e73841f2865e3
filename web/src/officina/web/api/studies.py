"""Hyper-parameter studies: create, list, read (with trials and importances), stop, extend."""
from __future__ import annotations

from flask import Blueprint, jsonify

from officina.platform.errors import Invalid
from officina.platform.tasks import TUNING_DRIVE
from officina.web.auth import current_principal, services
from officina.web.inputs import json_value
from officina.web.serialize import to_json

bp = Blueprint("studies", __name__)


@bp.post("/teams/<team>/studies")
def create(team: str):
    study = services().studies.create(current_principal(), team, json_value())
    services().send_task(TUNING_DRIVE, [study.id], "io")  # the first trials start now, not at the next beat
    return jsonify(study=to_json(study)), 201


@bp.get("/teams/<team>/studies")
def list_studies(team: str):
    return jsonify(studies=to_json(services().studies.list(current_principal(), team)))


@bp.get("/studies/<study_id>")
def get(study_id: str):
    principal = current_principal()
    studies = services().studies
    return jsonify(study=to_json(studies.get(principal, study_id)),
                   trials=to_json(studies.trials(principal, study_id)))


@bp.get("/studies/<study_id>/importance")
def importance(study_id: str):
    return jsonify(importance=services().studies.importance(current_principal(), study_id))


@bp.post("/studies/<study_id>/stop")
def stop(study_id: str):
    return jsonify(study=to_json(services().studies.stop(current_principal(), study_id)))


@bp.post("/studies/<study_id>/extend")
def extend(study_id: str):
    body = json_value()
    if not isinstance(body, dict) or set(body) != {"trials"}:
        raise Invalid("send {\"trials\": N}, the number of trials to add", field="trials")
    study = services().studies.extend(current_principal(), study_id, body["trials"])
    services().send_task(TUNING_DRIVE, [study.id], "io")
    return jsonify(study=to_json(study))
