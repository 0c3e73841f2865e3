"""Builds of dataset versions: feed an upload, commit it, follow any build's progress."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from officina.platform.errors import Invalid
from officina.web.auth import current_principal, services
from officina.web.inputs import int_arg, json_body
from officina.web.serialize import to_json

bp = Blueprint("builds", __name__, url_prefix="/builds")
# Team-scoped lineage lookups live beside the teams routes.
lineage_bp = Blueprint("lineage", __name__, url_prefix="/teams/<team>/lineage")



@bp.get("/<build_id>")
def get_build(build_id: str):
    principal = current_principal()
    body = {"build": to_json(services().builds.get(principal, build_id))}
    if request.args.get("files") in ("1", "true"):
        files, parts = services().builds.received(principal, build_id)
        body["files"], body["parts"] = to_json(files), parts
    return jsonify(body)


@bp.post("/<build_id>/files")
def declare_files(build_id: str):
    data = json_body(required=("files",))
    return jsonify(services().builds.declare(current_principal(), build_id, data["files"]))


@bp.put("/<build_id>/files/<path:path>")
def put_file(build_id: str, path: str):
    unknown = sorted(set(request.args) - {"part", "parts"})
    if unknown:
        raise Invalid(f"unknown parameter(s): {', '.join(unknown)}", **{k: "unknown parameter" for k in unknown})
    principal = current_principal()
    body = services().builds.put_file(principal, build_id, path, request.get_data(cache=False),
                                      sha256=request.headers.get("X-Content-SHA256") or None,
                                      part=int_arg("part"), parts=int_arg("parts"))
    return jsonify(body)


@bp.post("/<build_id>/batch")
def put_batch(build_id: str):
    """Many small declared files in one request: an uncompressed tar whose entry names are their paths."""
    return jsonify(services().builds.put_batch(current_principal(), build_id, request.get_data(cache=False)))


@bp.post("/<build_id>/commit")
def commit(build_id: str):
    json_body()
    return jsonify(build=to_json(services().builds.commit(current_principal(), build_id))), 202


@bp.delete("/<build_id>")
def abort(build_id: str):
    services().builds.abort(current_principal(), build_id)
    return "", 204


@lineage_bp.get("")
def used_by(team: str):
    used = services().datasets.used_by(current_principal(), team, request.args.get("consumer_kind"),
                                       request.args.get("consumer_id"))
    return jsonify(used=to_json(used))
