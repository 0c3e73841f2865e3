"""Runs and tracking: params, metrics, artifacts, checkpoints, lineage."""
from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from officina.platform.errors import Invalid
from officina.web.auth import current_principal, services
from officina.web.inputs import int_arg, json_body, json_value
from officina.web.serialize import to_json

bp = Blueprint("runs", __name__)


@bp.post("/teams/<team>/runs")
def create_run(team: str):
    return jsonify(run=to_json(services().tracking.create_run(current_principal(), team, json_value()))), 201


@bp.get("/teams/<team>/runs")
def list_runs(team: str):
    runs = services().tracking.list(current_principal(), team, project=request.args.get("project") or None,
                                    status=request.args.get("status") or None, q=request.args.get("q") or None,
                                    sort=request.args.get("sort") or None, limit=int_arg("limit", 100))
    return jsonify(runs=to_json(runs))


@bp.get("/teams/<team>/projects")
def projects(team: str):
    return jsonify(projects=to_json(services().tracking.projects(current_principal(), team)))


@bp.get("/runs/<run_id>")
def get_run(run_id: str):
    return jsonify(run=to_json(services().tracking.get(current_principal(), run_id)))


@bp.get("/runs/<run_id>/control")
def control(run_id: str):
    """``{"stop": bool, "reason"}``: whether the run's job should checkpoint and stop (``run.should_stop()``)."""
    return jsonify(services().tracking.control(current_principal(), run_id))


@bp.patch("/runs/<run_id>")
def update_run(run_id: str):
    return jsonify(run=to_json(services().tracking.update(current_principal(), run_id, json_value())))


@bp.post("/runs/<run_id>/params")
def log_params(run_id: str):
    data = json_body(required=("params",))
    return jsonify(run=to_json(services().tracking.log_params(current_principal(), run_id, data["params"])))


@bp.post("/runs/<run_id>/system")
def log_system(run_id: str):
    data = json_body(required=("system",))
    services().tracking.log_system(current_principal(), run_id, data["system"])
    return "", 204


@bp.post("/runs/<run_id>/metrics")
def log_metrics(run_id: str):
    data = json_body(required=("metrics",))
    return jsonify(services().tracking.log_metrics(current_principal(), run_id, data["metrics"]))


@bp.get("/runs/<run_id>/metrics")
def metrics(run_id: str):
    return jsonify(metrics=services().tracking.metrics(current_principal(), run_id))


@bp.get("/runs/<run_id>/metrics/<path:key>")
def history(run_id: str, key: str):
    body = services().tracking.history(current_principal(), run_id, key, max_points=int_arg("max_points", 1000),
                                       min_step=int_arg("min_step"), max_step=int_arg("max_step"))
    return jsonify(to_json(body))


@bp.put("/runs/<run_id>/artifacts/<path:path>")
def put_artifact(run_id: str, path: str):
    meta = None
    if request.headers.get("X-Meta"):
        try:
            meta = json.loads(request.headers["X-Meta"])
        except ValueError:
            raise Invalid("X-Meta must be a JSON object", field="X-Meta") from None
    artifact = services().tracking.put_artifact(current_principal(), run_id, path, request.get_data(cache=False),
                                                kind=request.args.get("kind", "artifact"), meta=meta)
    return jsonify(artifact=to_json(artifact)), 201


@bp.get("/runs/<run_id>/artifacts")
def list_artifacts(run_id: str):
    return jsonify(artifacts=to_json(services().tracking.artifacts(current_principal(), run_id)))


@bp.get("/runs/<run_id>/artifacts/<path:path>")
def get_artifact(run_id: str, path: str):
    artifact, chunks = services().tracking.open_artifact(current_principal(), run_id, path)
    response = Response(chunks, mimetype="text/plain" if artifact.kind == "log" else "application/octet-stream")
    response.headers["Content-Length"] = str(artifact.size)
    response.headers["X-Content-SHA256"] = artifact.sha256
    response.headers.set("Content-Disposition", "attachment", filename=path.rsplit("/", 1)[-1])
    return response


@bp.put("/runs/<run_id>/checkpoints/<int:step>")
def put_checkpoint(run_id: str, step: int):
    checkpoint = services().tracking.put_checkpoint(current_principal(), run_id, step, request.get_data(cache=False),
                                                    fmt=request.args.get("format", "bytes"))
    return jsonify(checkpoint=to_json(checkpoint)), 201


@bp.get("/runs/<run_id>/checkpoints")
def list_checkpoints(run_id: str):
    return jsonify(checkpoints=to_json(services().tracking.checkpoints(current_principal(), run_id)))


@bp.get("/runs/<run_id>/checkpoints/<step>")
def get_checkpoint(run_id: str, step: str):
    checkpoint, chunks = services().tracking.open_checkpoint(current_principal(), run_id, step)
    response = Response(chunks, mimetype="application/octet-stream")
    response.headers["Content-Length"] = str(checkpoint.size)
    response.headers["X-Checkpoint-Step"] = str(checkpoint.step)
    response.headers["X-Checkpoint-Format"] = checkpoint.format
    response.headers["X-Content-SHA256"] = checkpoint.sha256
    return response


@bp.get("/runs/<run_id>/lineage")
def lineage(run_id: str):
    return jsonify(datasets=services().tracking.lineage(current_principal(), run_id))
