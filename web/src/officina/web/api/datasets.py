"""Datasets of a team: upload versions, list, read versions and files."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from officina.platform.errors import Invalid
from officina.web.auth import current_principal, services
from officina.web.inputs import json_body
from officina.web.serialize import to_json

bp = Blueprint("datasets", __name__, url_prefix="/teams/<team>/datasets")

_UPLOAD_FIELDS = {"file", "label_column", "text_column", "kind", "message"}


def _version_json(version, files=None, *, full: bool = True) -> dict:
    body = to_json(version)
    if not full:
        body.pop("preview", None)
        body.pop("stats", None)
    if files is not None:
        body["files"] = to_json(files)
    return body


@bp.get("")
def list_datasets(team: str):
    return jsonify(datasets=to_json(services().datasets.list(current_principal(), team)))


@bp.post("/<name>/versions")
def upload_version(team: str, name: str):
    """Upload one file (CSV, Parquet, JSONL, or a zip/tar of images) as the next version."""
    unknown = sorted(set(request.form) - _UPLOAD_FIELDS)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}", **{k: "unknown field" for k in unknown})
    upload = request.files.get("file")
    if upload is None:
        raise Invalid("send the data as a multipart form field named 'file'", file="required")
    if len(request.files) > 1:
        raise Invalid("send exactly one file per upload", file="too many")
    version = services().datasets.upload(
        current_principal(), team, name, upload.filename or "upload", upload.read(),
        label=request.form.get("label_column") or None, text=request.form.get("text_column") or None,
        kind=request.form.get("kind") or None, message=request.form.get("message", ""))
    return jsonify(version=_version_json(version)), 201


@bp.get("/<name>")
def get_dataset(team: str, name: str):
    principal = current_principal()
    dataset, versions = services().datasets.get(principal, team, name)
    return jsonify(dataset=to_json(dataset), versions=[_version_json(v, full=False) for v in versions],
                   tags=services().datasets.tags(principal, team, name))


@bp.post("/<name>/uploads")
def create_upload(team: str, name: str):
    """Open a resumable upload build (see docs/datasets-api.md)."""
    build = services().builds.create_upload(current_principal(), team, name, json_body(
        optional=("kind", "label_column", "text_column", "message", "base", "remove")))
    return jsonify(build=to_json(build)), 201


@bp.get("/<name>/builds")
def list_builds(team: str, name: str):
    return jsonify(builds=to_json(services().builds.list(current_principal(), team, name)))


@bp.post("/<name>/versions/<ref>/derive")
def derive(team: str, name: str, ref: str):
    spec = json_body(optional=("remove", "relabel", "filter", "label_column", "message"))
    return jsonify(build=to_json(services().builds.derive(current_principal(), team, name, ref, spec))), 202


@bp.post("/<name>/versions/<ref>/split")
def split(team: str, name: str, ref: str):
    spec = json_body(optional=("fractions", "seed", "stratify", "message"))
    return jsonify(build=to_json(services().builds.split(current_principal(), team, name, ref, spec))), 202


@bp.get("/<name>/versions/<ref>/splits")
def get_splits(team: str, name: str, ref: str):
    return jsonify(splits=services().datasets.splits(current_principal(), team, name, ref))


@bp.get("/<name>/diff")
def diff(team: str, name: str):
    body = services().datasets.diff(current_principal(), team, name, request.args.get("from", ""),
                                    request.args.get("to", ""))
    body["from"], body["to"] = _version_json(body["from"], full=False), _version_json(body["to"], full=False)
    return jsonify(to_json(body))


@bp.get("/<name>/versions/<ref>/lineage")
def get_lineage(team: str, name: str, ref: str):
    return jsonify(to_json(services().datasets.lineage(current_principal(), team, name, ref)))


@bp.post("/<name>/versions/<ref>/lineage")
def record_lineage(team: str, name: str, ref: str):
    data = json_body(required=("consumer_kind", "consumer_id"), optional=("role",))
    lineage = services().datasets.record_use(current_principal(), team, name, ref, data["consumer_kind"],
                                             data["consumer_id"], data.get("role", ""))
    return jsonify(lineage=to_json(lineage)), 201


@bp.put("/<name>/tags/<tag>")
def move_tag(team: str, name: str, tag: str):
    data = json_body(required=("version",))
    if not isinstance(data["version"], (str, int)) or isinstance(data["version"], bool):
        raise Invalid("version must be a version number or tag", field="version")
    number = services().datasets.move_tag(current_principal(), team, name, tag, str(data["version"]))
    return jsonify(tag=tag, version=number)


@bp.delete("/<name>/tags/<tag>")
def delete_tag(team: str, name: str, tag: str):
    services().datasets.delete_tag(current_principal(), team, name, tag)
    return "", 204


@bp.get("/<name>/versions/<ref>")
def get_version(team: str, name: str, ref: str):
    version, files = services().datasets.version(current_principal(), team, name, ref)
    return jsonify(version=_version_json(version, files))


@bp.get("/<name>/versions/<ref>/files/<path:path>")
def get_file(team: str, name: str, ref: str, path: str):
    record, chunks = services().datasets.open_file(current_principal(), team, name, ref, path)
    response = Response(chunks, mimetype="application/octet-stream")
    response.headers["Content-Length"] = str(record.size)
    response.headers["X-Content-SHA256"] = record.sha256
    response.headers.set("Content-Disposition", "attachment", filename=path.rsplit("/", 1)[-1])
    return response
