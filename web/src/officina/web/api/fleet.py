"""The worker fleet: who offers what (queues, CPUs, memory, GPUs) and whether it is alive."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from officina.web.auth import current_principal, services
from officina.web.serialize import to_json

bp = Blueprint("fleet", __name__, url_prefix="/fleet")


@bp.get("/workers")
def workers():
    listing = services().fleet.list(current_principal(), include_stopped=request.args.get("all") in ("1", "true"))
    return jsonify(workers=[{**to_json(w), "simulated": w.simulated} for w in listing])
