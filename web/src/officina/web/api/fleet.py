"""The worker fleet: who offers what (queues, CPUs, memory, GPUs) and whether it is alive."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from officina.web.auth import current_principal, services
from officina.web.inputs import json_value
from officina.web.serialize import to_json

bp = Blueprint("fleet", __name__, url_prefix="/fleet")


@bp.get("/workers")
def workers():
    listing = services().fleet.list(current_principal(), include_stopped=request.args.get("all") in ("1", "true"))
    return jsonify(workers=[{**to_json(w), "simulated": w.simulated} for w in listing])


quotas_bp = Blueprint("quotas", __name__)


@quotas_bp.get("/quotas")
def list_quotas():
    """Quotas and usage of the caller's teams (every team for admins)."""
    return jsonify(quotas=to_json(services().quotas.list(current_principal())))


@quotas_bp.get("/teams/<team>/quota")
def get_quota(team: str):
    return jsonify(quota=to_json(services().quotas.get(current_principal(), team)))


@quotas_bp.put("/teams/<team>/quota")
def set_quota(team: str):
    return jsonify(quota=to_json(services().quotas.set(current_principal(), team, json_value())))
