"""Jobs: code bundles, submit, list, follow (events, logs) and cancel."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from officina.platform.errors import NotFound
from officina.web.auth import current_principal, services
from officina.web.inputs import int_arg, json_body, json_value
from officina.web.serialize import to_json

bp = Blueprint("jobs", __name__)



@bp.put("/teams/<team>/code/<sha256>")
def put_code(team: str, sha256: str):
    record, created = services().jobs.put_code(current_principal(), team, sha256, request.get_data(cache=False))
    return jsonify(record), 201 if created else 200


@bp.route("/teams/<team>/code/<sha256>", methods=["HEAD"])
def has_code(team: str, sha256: str):
    if not services().jobs.has_code(current_principal(), team, sha256):
        raise NotFound(f"code bundle {sha256[:12]} not found")
    return "", 200


@bp.post("/teams/<team>/jobs")
def submit(team: str):
    return jsonify(job=to_json(services().jobs.submit(current_principal(), team, json_value()))), 201


@bp.get("/teams/<team>/jobs")
def list_jobs(team: str):
    jobs = services().jobs.list(current_principal(), team, state=request.args.get("state") or None,
                                project=request.args.get("project") or None, limit=int_arg("limit", 100))
    return jsonify(jobs=to_json(jobs))


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(job=to_json(services().jobs.get(current_principal(), job_id)))


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    return jsonify(events=to_json(services().jobs.events(current_principal(), job_id)))


@bp.get("/jobs/<job_id>/logs")
def job_logs(job_id: str):
    job, lines = services().jobs.logs(current_principal(), job_id, after=int_arg("after", 0),
                                      attempt=int_arg("attempt"))
    nxt = lines[-1].seq if lines else int_arg("after", 0)
    return jsonify(lines=to_json(lines), next=nxt, attempt=int_arg("attempt") or max(job.attempt, 1),
                   done=job.ended and len(lines) == 0, state=job.state)


@bp.post("/jobs/<job_id>/cancel")
def cancel(job_id: str):
    json_body()
    return jsonify(job=to_json(services().jobs.cancel(current_principal(), job_id))), 202
