"""Console pages for the model registry: a team's models, and a model's page (gate policy, versions with
lineage, a chosen version's evaluations, gates, exports and promotion, and the promotion history)."""
from __future__ import annotations

import json

from flask import Response, flash, jsonify, redirect, render_template, request, url_for

from officina.platform.errors import Invalid, OfficinaError
from officina.platform.models.gates import POLICY_KEYS
from officina.platform.models.service import EXPORT_FORMATS
from officina.web.auth import current_principal, services
from officina.web.console.experiments import fmt
from officina.web.console.views import bp

ALIASES = ("production", "staging")  # offered first in the promote form; any valid alias may be typed
EXPORT_LABELS = {"onnx": "ONNX", "torchscript": "TorchScript", "onnx_int8": "ONNX int8"}
PENDING = ("queued", "running")
POLICY_EXAMPLE = {"dataset": {"name": "<dataset>", "version": 1, "split": "test"},
                  "metrics": {"accuracy": {"min": 0.9}}, "min_class_recall": 0.8, "max_regression": 0.01,
                  "latency_p95_ms": 50, "parity_tolerance": 0.0001, "auto_evaluate": True}


def pick_team(teams, wanted: str | None) -> str | None:
    """The team asked for when the caller is in it, else their first team."""
    names = [t.name for t in teams]
    return wanted if wanted in names else (names[0] if names else None)


def policy_text(policy: dict | None) -> str:
    """A gate policy as the textarea shows it: indented JSON, ``{}`` when there is none."""
    return json.dumps(policy or {}, indent=2)


def parse_policy(text: str) -> dict:
    """The policy JSON typed into the textarea (the service checks its keys and values).

    Raises:
        Invalid: not JSON, or JSON that is not an object.
    """
    try:
        policy = json.loads(text or "{}")
    except ValueError as exc:
        raise Invalid(f"the gate policy is not valid JSON: {exc}", field="policy") from None
    if not isinstance(policy, dict):
        raise Invalid("the gate policy must be a JSON object like {\"dataset\": {…}, \"metrics\": {…}}",
                      field="policy")
    return policy


def _alias_arg(source) -> str:
    """The alias of a form or query: the typed custom one when "custom" is chosen."""
    alias = (source.get("alias") or "production").strip()
    if alias == "custom":
        alias = (source.get("custom_alias") or "").strip()
    return alias


def _digest(version: dict, batches: list[dict]) -> str:
    """What changes when an evaluation, export or batch prediction moves on (the page polls it)."""
    parts = [f"e{e['id']}:{e['state']}" for e in version["evaluations"]]
    parts += [f"x{x['format']}:{x['state']}" for x in version["exports"]]
    parts += [f"b{b['id']}:{b['state']}" for b in batches]
    return "|".join(parts)


def _pending(version: dict, batches: list[dict]) -> bool:
    return any(e["state"] in PENDING for e in version["evaluations"]) or \
        any(x["state"] in PENDING for x in version["exports"]) or any(b["state"] in PENDING for b in batches)


def _batches(principal, team: str, name: str) -> list[dict]:
    """This model's latest batch predictions."""
    return [b for b in services().models.list_batches(principal, team) if b["model"] == name][:10]


def _model_url(team: str, name: str, version=None, alias: str | None = None) -> str:
    args = {}
    if version is not None:
        args["version"] = version
    if alias and alias != "production":
        args["alias"] = alias
    return url_for("console.model", team=team, name=name, **args)


@bp.route("/models", methods=["GET", "POST"])
def models():
    """A team's models, and a form to register a model file as a new version."""
    principal = current_principal()
    svc = services()
    teams = svc.auth.list_teams(principal)
    team = pick_team(teams, request.form.get("team") if request.method == "POST" else request.args.get("team"))
    if request.method == "POST" and team:
        name = (request.form.get("name") or "").strip()
        try:
            version = _register_upload(principal, team, name)
        except OfficinaError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Registered {name} v{version['version']}.", "ok")
            return redirect(_model_url(team, name, version["version"]))
    listing, error = [], None
    if team:
        try:
            listing = svc.models.list_models(principal, team)
        except OfficinaError as exc:
            error = exc.message
    return render_template("models.html", teams=teams, team=team, models=listing, error=error,
                           form=request.form if request.method == "POST" else {})


def _register_upload(principal, team: str, name: str) -> dict:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise Invalid("choose a TorchScript (.pt) or ONNX (.onnx) file to register", field="file")
    signature = (request.form.get("signature") or "").strip()
    if signature:
        try:
            signature = json.loads(signature)
        except ValueError as exc:
            raise Invalid(f"the signature is not valid JSON: {exc}", field="signature") from None
    return services().models.register_file(principal, team, name, upload.read(), signature=signature or None,
                                           description=request.form.get("description", ""))


@bp.get("/models/<team>/<name>")
def model(team: str, name: str):
    """A model: its aliases, gate policy, versions and the chosen version (default: the latest)."""
    return _render_model(team, name)


def _chosen_version(principal, team: str, name: str, alias: str) -> tuple[dict | None, dict | None, str | None]:
    """The version asked for (default: the latest) and its gates judged now for ``alias``."""
    registry = services().models
    try:
        version = registry.get_version(principal, team, name, request.args.get("version") or "latest")
    except OfficinaError as exc:
        return None, None, exc.message
    try:
        return version, registry.gates(principal, team, name, str(version["version"]), alias), None
    except OfficinaError as exc:
        return version, None, exc.message


def _render_model(team: str, name: str, *, typed_policy: str | None = None, status: int = 200):
    principal = current_principal()
    registry = services().models
    record = registry.get_model(principal, team, name)
    versions = registry.list_versions(principal, team, name)
    alias = _alias_arg(request.args)
    version, judged, error = _chosen_version(principal, team, name, alias) if versions else (None, None, None)
    evaluations = version["evaluations"] if version else []
    shown = (judged or {}).get("evaluation") or next((e for e in evaluations if e["state"] == "succeeded"), None)
    owner = services().auth.team(principal, team)
    batches = _batches(principal, team, name)
    datasets = [d.name for d in services().datasets.list(principal, team)]
    return render_template(
        "model.html", team=team, model=record, versions=versions, version=version, judged=judged, alias=alias,
        error=error, evaluation=shown, latest_evaluation=evaluations[0] if evaluations else None,
        can_override=principal.is_admin or principal.role_in(owner.id) == "admin", aliases=ALIASES,
        policy_text=typed_policy if typed_policy is not None else policy_text(record["gate_policy"]),
        policy_keys=POLICY_KEYS, policy_example=policy_text(POLICY_EXAMPLE), export_formats=EXPORT_FORMATS,
        export_labels=EXPORT_LABELS, exports={x["format"]: x for x in (version or {}).get("exports", [])},
        pending=bool(version and _pending(version, batches)), digest=_digest(version, batches) if version else "",
        fmt=fmt,
        batches=batches, datasets=datasets,
        model_url=lambda v=None, a=alias: _model_url(team, name, v, a)), status


@bp.post("/models/<team>/<name>/policy")
def model_policy(team: str, name: str):
    """Save the gate policy typed as JSON; a bad one is shown again with the reason."""
    text = request.form.get("policy", "")
    try:
        services().models.set_policy(current_principal(), team, name, parse_policy(text))
    except OfficinaError as exc:
        flash(f"Gate policy not saved: {exc.message}", "error")
        return _render_model(team, name, typed_policy=text, status=400)
    flash("Gate policy saved.", "ok")
    return redirect(_model_url(team, name, request.form.get("version") or None, _alias_arg(request.form)))


@bp.post("/models/<team>/<name>/versions/<ref>/evaluate")
def model_evaluate(team: str, name: str, ref: str):
    alias = _alias_arg(request.form)
    try:
        services().models.evaluate(current_principal(), team, name, ref, target_alias=alias)
        flash(f"Evaluation of v{ref} queued; this page updates when it finishes.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(_model_url(team, name, ref, alias))


@bp.post("/models/<team>/<name>/versions/<ref>/export")
def model_export(team: str, name: str, ref: str):
    fmt_ = request.form.get("format", "")
    try:
        export = services().models.request_export(current_principal(), team, name, ref, fmt_)
        label = EXPORT_LABELS.get(fmt_, fmt_)
        flash(f"{label} export of v{ref} already done." if export["state"] == "succeeded"
              else f"{label} export of v{ref} queued.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(_model_url(team, name, ref, _alias_arg(request.form)) + "#exports")


@bp.post("/models/<team>/<name>/versions/<ref>/batch")
def model_batch(team: str, name: str, ref: str):
    """Score a dataset version with this version; the predictions become a new version of the output dataset."""
    form = request.form
    body = {"model": name, "version": ref, "dataset": form.get("dataset", ""),
            "dataset_version": (form.get("dataset_version") or "latest").strip(), "output": form.get("output") or None}
    try:
        batch = services().models.create_batch(current_principal(), team, body)
        flash(f"Batch prediction of {batch['source']['dataset']} v{batch['source']['version']} queued; the result "
              f"will be {batch['output']['dataset']}.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(_model_url(team, name, ref, _alias_arg(form)) + "#batch")


@bp.post("/models/<team>/<name>/versions/<ref>/promote")
def model_promote(team: str, name: str, ref: str):
    """Move an alias to this version when its gates pass (or an admin overrides them with a reason)."""
    alias = _alias_arg(request.form)
    reason = (request.form.get("override_reason") or "").strip() or None
    try:
        done = services().models.promote(current_principal(), team, name, ref, alias, override_reason=reason)
    except OfficinaError as exc:
        flash(f"Not promoted: {exc.message}", "error")
    else:
        how = " (gates overridden)" if done["outcome"] == "overridden" else ""
        was = f", was v{done['from_version']}" if done["from_version"] else ""
        flash(f"{name} v{done['version']} is now {alias!r}{how}{was}.", "ok")
    return redirect(_model_url(team, name, ref, alias))


@bp.get("/models/<team>/<name>/versions/<ref>/file")
def model_file(team: str, name: str, ref: str):
    """Download a version's own file (``?format=`` absent) or one of its finished exports."""
    try:
        filename, data = services().models.version_file(current_principal(), team, name, ref,
                                                        request.args.get("format") or None)
    except OfficinaError as exc:
        flash(exc.message, "error")
        return redirect(_model_url(team, name, ref))
    return Response(data, mimetype="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Content-Length": str(len(data))})


@bp.get("/models/<team>/<name>/versions/<ref>/state")
def model_state(team: str, name: str, ref: str):
    """The state digest of a version's evaluations and exports, which the page polls while one is pending."""
    principal = current_principal()
    version = services().models.get_version(principal, team, name, ref)
    batches = _batches(principal, team, name)
    return jsonify(digest=_digest(version, batches), pending=_pending(version, batches))
