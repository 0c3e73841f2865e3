"""The worker fleet: who offers what (queues, CPUs, memory, GPUs) and whether it is alive."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from officina.platform.errors import Invalid
from officina.web.auth import current_principal, services
from officina.web.inputs import json_value
from officina.web.serialize import to_json

bp = Blueprint("fleet", __name__, url_prefix="/fleet")


@bp.get("/workers")
def workers():
    """Workers with each GPU's holder (job, team, since) or null."""
    listing = services().fleet.list(current_principal(), include_stopped=request.args.get("all") in ("1", "true"))
    holders = services().queue.holders()
    return jsonify(workers=[worker_json(w, holders) for w in listing])


def worker_json(worker, holders) -> dict:
    body = {**to_json(worker), "simulated": worker.simulated}
    for gpu in body["gpus"]:
        holder = holders.get((worker.name, gpu["index"]))
        gpu["holder"] = None if holder is None else {"job_id": holder.job_id, "team": holder.team,
                                                     "job_name": holder.job_name, "since": to_json(holder.since)}
    return body


scheduler_bp = Blueprint("scheduler", __name__, url_prefix="/scheduler")


@scheduler_bp.get("")
def scheduler_state():
    """The leader and its last pass (queued, placed, waiting, preempted, free GPUs, milliseconds)."""
    current_principal()
    return jsonify(scheduler=to_json(services().scheduler.state()))


@scheduler_bp.get("/queue")
def queue():
    """Active jobs the caller can see, running first, then queued in scheduling order, with reasons."""
    limit = request.args.get("limit", "500")
    if not limit.isdigit():
        raise Invalid("limit must be a whole number", field="limit")
    return jsonify(jobs=to_json(services().queue.queue(current_principal(), limit=int(limit))))


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
