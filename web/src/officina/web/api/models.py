"""Models: registry, versions, gates and promotion, exports, deployments, batch predictions.

The API is described in docs/models.md.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from officina.platform.errors import Invalid
from officina.web.auth import current_principal, services
from officina.web.inputs import int_arg, json_body, json_value
from officina.web.serialize import to_json

bp = Blueprint("models", __name__)


def _models():
    return services().models


# -- models and versions ------------------------------------------------------------------------------
@bp.get("/teams/<team>/models")
def list_models(team: str):
    return jsonify(models=to_json(_models().list_models(current_principal(), team)))


@bp.post("/teams/<team>/models")
def create_model(team: str):
    body = json_body(required=("name",), optional=("description", "gate_policy"))
    model = _models().create_model(current_principal(), team, body["name"], description=body.get("description", ""),
                                   gate_policy=body.get("gate_policy"))
    return jsonify(model=to_json(model)), 201


@bp.get("/teams/<team>/models/<name>")
def get_model(team: str, name: str):
    principal = current_principal()
    return jsonify(model=to_json(_models().get_model(principal, team, name)),
                   versions=to_json(_models().list_versions(principal, team, name)))


@bp.put("/teams/<team>/models/<name>/policy")
def set_policy(team: str, name: str):
    return jsonify(model=to_json(_models().set_policy(current_principal(), team, name, json_value())))


@bp.post("/teams/<team>/models/<name>/versions")
def register_file(team: str, name: str):
    """Upload a model file (multipart ``file``; optional ``signature`` JSON and ``description`` fields)."""
    upload = request.files.get("file")
    if upload is None:
        raise Invalid("send the model file as multipart field 'file'", field="file")
    signature = request.form.get("signature")
    if signature is not None:
        try:
            signature = json.loads(signature)
        except ValueError:
            raise Invalid("signature must be JSON", field="signature") from None
    version = _models().register_file(current_principal(), team, name, upload.read(), signature=signature,
                                      description=request.form.get("description", ""))
    return jsonify(version=to_json(version)), 201


@bp.post("/runs/<run_id>/models")
def register_from_run(run_id: str):
    body = json_body(required=("name",), optional=("artifact", "signature", "description"))
    version = _models().register_from_run(current_principal(), run_id, body["name"],
                                          artifact=body.get("artifact", "model.pt"),
                                          signature=body.get("signature"), description=body.get("description", ""))
    return jsonify(version=to_json(version)), 201


@bp.get("/teams/<team>/models/<name>/versions/<ref>")
def get_version(team: str, name: str, ref: str):
    return jsonify(version=to_json(_models().get_version(current_principal(), team, name, ref)))


@bp.get("/teams/<team>/models/<name>/versions/<ref>/file")
def download(team: str, name: str, ref: str):
    """The version's own file, or ``?format=onnx|torchscript|onnx_int8`` for an export."""
    filename, data = _models().version_file(current_principal(), team, name, ref, request.args.get("format"))
    response = Response(data, mimetype="application/octet-stream")
    response.headers.set("Content-Disposition", "attachment", filename=filename)
    return response


# -- evaluation, gates, promotion ---------------------------------------------------------------------
@bp.post("/teams/<team>/models/<name>/versions/<ref>/evaluations")
def evaluate(team: str, name: str, ref: str):
    body = json_body(optional=("target_alias",))
    evaluation = _models().evaluate(current_principal(), team, name, ref,
                                    target_alias=body.get("target_alias", "production"))
    return jsonify(evaluation=to_json(evaluation)), 202


@bp.get("/evaluations/<evaluation_id>")
def get_evaluation(evaluation_id: str):
    return jsonify(evaluation=to_json(_models().get_evaluation(current_principal(), evaluation_id)))


@bp.get("/teams/<team>/models/<name>/versions/<ref>/gates")
def gates(team: str, name: str, ref: str):
    verdict = _models().gates(current_principal(), team, name, ref, request.args.get("alias", "production"))
    holder = verdict.pop("holder")
    verdict["holder"] = holder["version"] if holder else None
    return jsonify(to_json(verdict))


@bp.post("/teams/<team>/models/<name>/versions/<ref>/promote")
def promote(team: str, name: str, ref: str):
    body = json_body(required=("alias",), optional=("override_reason",))
    result = _models().promote(current_principal(), team, name, ref, body["alias"],
                               override_reason=body.get("override_reason"))
    return jsonify(to_json(result))


# -- exports ------------------------------------------------------------------------------------------
@bp.post("/teams/<team>/models/<name>/versions/<ref>/exports")
def export(team: str, name: str, ref: str):
    body = json_body(required=("format",))
    return jsonify(export=to_json(_models().request_export(current_principal(), team, name, ref, body["format"]))), 202


# -- deployments --------------------------------------------------------------------------------------
@bp.get("/teams/<team>/deployments")
def list_deployments(team: str):
    return jsonify(deployments=to_json(_models().list_deployments(current_principal(), team)))


@bp.post("/teams/<team>/deployments")
def create_deployment(team: str):
    return jsonify(deployment=to_json(_models().create_deployment(current_principal(), team, json_value()))), 201


@bp.get("/deployments/<name>")
def get_deployment(name: str):
    deployment = _models().get_deployment(current_principal(), name)
    deployment["url"] = services().settings.predict_url + f"/v1/deployments/{name}/predict"
    return jsonify(deployment=to_json(deployment))


@bp.patch("/deployments/<name>")
def update_deployment(name: str):
    return jsonify(deployment=to_json(_models().update_deployment(current_principal(), name, json_value())))


@bp.post("/deployments/<name>/rollback")
def rollback(name: str):
    body = json_body(optional=("revision",))
    return jsonify(deployment=to_json(_models().rollback_deployment(current_principal(), name, body.get("revision"))))


@bp.delete("/deployments/<name>")
def delete_deployment(name: str):
    _models().delete_deployment(current_principal(), name)
    return "", 204


@bp.get("/deployments/<name>/predictions")
def predictions(name: str):
    shadow = request.args.get("shadow")
    if shadow not in (None, "true", "false"):
        raise Invalid("shadow must be true or false", field="shadow")
    logs = _models().prediction_logs(current_principal(), name, limit=int_arg("limit", 50),
                                     shadow=None if shadow is None else shadow == "true")
    return jsonify(predictions=to_json(logs))


# -- batch prediction ---------------------------------------------------------------------------------
@bp.post("/teams/<team>/batch-predictions")
def create_batch(team: str):
    return jsonify(batch=to_json(_models().create_batch(current_principal(), team, json_value()))), 202


@bp.get("/teams/<team>/batch-predictions")
def list_batches(team: str):
    return jsonify(batches=to_json(_models().list_batches(current_principal(), team)))


@bp.get("/batch-predictions/<batch_id>")
def get_batch(batch_id: str):
    return jsonify(batch=to_json(_models().get_batch(current_principal(), batch_id)))
