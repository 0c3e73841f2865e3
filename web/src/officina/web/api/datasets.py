"""Datasets of a team: upload versions, list, read versions and files."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from officina.platform.errors import Invalid
from officina.web.auth import current_principal, services
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
    dataset, versions = services().datasets.get(current_principal(), team, name)
    return jsonify(dataset=to_json(dataset), versions=[_version_json(v, full=False) for v in versions])


@bp.get("/<name>/versions/<ref>")
def get_version(team: str, name: str, ref: str):
    version, files = services().datasets.version(current_principal(), team, name, ref)
    return jsonify(version=_version_json(version, files))


@bp.get("/<name>/versions/<ref>/files/<path:path>")
def get_file(team: str, name: str, ref: str, path: str):
    data = services().datasets.read_file(current_principal(), team, name, ref, path)
    response = Response(data, mimetype="application/octet-stream")
    response.headers.set("Content-Disposition", "attachment", filename=path.rsplit("/", 1)[-1])
    return response
