"""Console pages of the Data area: datasets, versions, tags, builds (upload, derive, split), diffs."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from officina.platform.errors import Invalid, NotFound, OfficinaError
from officina.web.auth import current_principal, services
from officina.web.console.views import bp

FILTER_OPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null"]
SPLITS = ("train", "val", "test")
LIST_LIMIT = 100  # files shown per list on the diff page


@bp.route("/data", methods=["GET", "POST"])
def data():
    principal = current_principal()
    svc = services()
    teams = svc.auth.list_teams(principal)
    if request.method == "POST":  # the form without JavaScript: one file, synchronously
        upload = request.files.get("file")
        team, name = request.form.get("team", ""), request.form.get("name", "").strip()
        try:
            if upload is None or not upload.filename:
                raise Invalid("choose a file to upload", file="required")
            version = svc.datasets.upload(principal, team, name, upload.filename, upload.read(),
                                          label=request.form.get("label_column") or None,
                                          message=request.form.get("message", ""))
        except OfficinaError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Uploaded version {version.number} of {name}.", "ok")
            return redirect(url_for("console.dataset", team=team, name=name))
    listing = [(team, svc.datasets.list(principal, team.name)) for team in teams]
    return render_template("data.html", listing=listing, teams=teams)


@bp.get("/data/<team>/<name>")
def dataset(team: str, name: str):
    principal = current_principal()
    svc = services()
    ds, versions = svc.datasets.get(principal, team, name)
    version, files, lineage = None, [], None
    if versions:
        ref = request.args.get("version", "latest")
        version, files = svc.datasets.version(principal, team, name, ref)
        lineage = svc.datasets.lineage(principal, team, name, str(version.number))
    return render_template(
        "dataset.html", team=team, dataset=ds, versions=versions, version=version, files=files[:200],
        file_total=len(files), tags=svc.datasets.tags(principal, team, name), lineage=lineage,
        builds=svc.builds.list(principal, team, name)[:20], columns=_columns(version), filter_ops=FILTER_OPS,
        splits=_in_split_order((version.splits or {}) if version else {}),
        split_params=_split_params(version))


@bp.post("/data/<team>/<name>/tags")
def dataset_tags(team: str, name: str):
    principal = current_principal()
    tag = request.form.get("tag", "").strip()
    try:
        if request.form.get("action") == "delete":
            services().datasets.delete_tag(principal, team, name, tag)
            flash(f"Tag {tag} removed.", "ok")
        else:
            ref = request.form.get("version", "").strip()
            services().datasets.move_tag(principal, team, name, tag, ref)
            flash(f"Tag {tag} now points at v{ref}.", "ok")
    except OfficinaError as exc:
        flash(exc.message, "error")
    return redirect(url_for("console.dataset", team=team, name=name, **_version_arg()))


@bp.post("/data/<team>/<name>/split")
def dataset_split(team: str, name: str):
    principal = current_principal()
    ref = request.form.get("ref", "latest")
    try:
        spec = _split_spec(request.form)
        build = services().builds.split(principal, team, name, ref, spec)
    except OfficinaError as exc:
        flash(f"Split not started: {exc.message}", "error")
        return redirect(url_for("console.dataset", team=team, name=name, version=ref))
    return redirect(url_for("console.build", team=team, name=name, build_id=build.id, follow=1))


@bp.post("/data/<team>/<name>/derive")
def dataset_derive(team: str, name: str):
    principal = current_principal()
    ref = request.form.get("ref", "latest")
    try:
        version, _ = services().datasets.version(principal, team, name, ref)
        spec = _derive_spec(request.form, _column_types(version))
        build = services().builds.derive(principal, team, name, ref, spec)
    except OfficinaError as exc:
        flash(f"Derive not started: {exc.message}", "error")
        return redirect(url_for("console.dataset", team=team, name=name, version=ref))
    return redirect(url_for("console.build", team=team, name=name, build_id=build.id, follow=1))


@bp.get("/data/<team>/<name>/builds/<build_id>")
def build(team: str, name: str, build_id: str):
    principal = current_principal()
    found = services().builds.get(principal, build_id)
    if found.team != team or found.dataset != name:
        raise NotFound(f"build {build_id} of dataset {team}/{name} not found")
    return render_template("build.html", team=team, name=name, build=found,
                           follow=request.args.get("follow") == "1")


@bp.get("/data/<team>/<name>/diff")
def dataset_diff(team: str, name: str):
    principal = current_principal()
    svc = services()
    ds, versions = svc.datasets.get(principal, team, name)
    numbers = [v.number for v in versions]
    from_ref = request.args.get("from") or (str(numbers[1]) if len(numbers) > 1 else "latest")
    to_ref = request.args.get("to") or "latest"
    diff, error = None, None
    try:
        diff = svc.datasets.diff(principal, team, name, from_ref, to_ref)
    except OfficinaError as exc:
        error = exc.message
    return render_template("dataset_diff.html", team=team, dataset=ds, versions=versions, diff=diff,
                           error=error, from_ref=from_ref, to_ref=to_ref, limit=LIST_LIMIT,
                           columns=_stats_side_by_side(diff) if diff else [],
                           labels=_labels_side_by_side(diff) if diff else [])


def _version_arg() -> dict:
    ref = request.form.get("return_version") or request.args.get("version")
    return {"version": ref} if ref else {}


def _in_split_order(mapping: dict) -> dict:
    """train, val, test first (Postgres jsonb does not keep key order), then any other split names."""
    order = {name: i for i, name in enumerate(SPLITS)}
    return dict(sorted(mapping.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _split_params(version) -> dict:
    """The parameters a split version was made with (fractions in split order), or {}."""
    params = dict(((version.origin or {}).get("split") or {}) if version else {})
    if params.get("fractions"):
        params["fractions"] = _in_split_order(params["fractions"])
    return params


def _columns(version) -> list[str]:
    """Column names of a tabular or text version, in file order."""
    if version is None:
        return []
    preview = version.preview or {}
    if preview.get("columns"):
        return list(preview["columns"])
    return [c["name"] for c in (version.stats or {}).get("column_stats") or []]


def _column_types(version) -> dict[str, str]:
    return {c["name"]: c.get("type", "") for c in (version.stats or {}).get("column_stats") or []}


def _number(text: str, field: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise Invalid(f"{field} must be a number, got {text!r}", field=field) from None


def _split_spec(form) -> dict:
    """The API body of a split from the console form (blank and zero fractions are left out)."""
    fractions = {}
    for split in SPLITS:
        raw = form.get(f"fraction_{split}", "").strip()
        if raw:
            value = _number(raw, f"{split} fraction")
            if value:
                fractions[split] = value
    seed = form.get("seed", "0").strip() or "0"
    if not seed.lstrip("-").isdigit():
        raise Invalid(f"seed must be a whole number, got {seed!r}", field="seed")
    spec = {"fractions": fractions, "seed": int(seed), "stratify": bool(form.get("stratify"))}
    if form.get("message", "").strip():
        spec["message"] = form["message"].strip()
    return spec


def _value(text: str, column_type: str):
    """A filter value typed like its column: numbers for int/float columns, booleans for bool ones."""
    text = text.strip()
    if column_type in ("int", "float"):
        value = _number(text, "filter value")
        return int(value) if column_type == "int" and value.is_integer() else value
    if column_type == "bool":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise Invalid(f"filter value for a true/false column must be true or false, got {text!r}")
    return text


def _derive_spec(form, types: dict[str, str]) -> dict:
    """The API body of a derive from the console form: removed paths, relabels, row filters, label column."""
    spec: dict = {}
    remove = [line.strip() for line in form.get("remove", "").splitlines() if line.strip()]
    if remove:
        spec["remove"] = remove
    relabel = {}
    for line in form.get("relabel", "").splitlines():
        if not line.strip():
            continue
        path, sep, label = line.strip().rpartition("=")
        if not sep or not path.strip() or not label.strip():
            raise Invalid(f"relabel lines are path=label, got {line.strip()!r}", field="relabel")
        relabel[path.strip()] = label.strip()
    if relabel:
        spec["relabel"] = relabel
    filters = []
    for column, op, raw in zip(form.getlist("filter_column"), form.getlist("filter_op"),
                               form.getlist("filter_value")):
        if not column:
            continue
        if op not in FILTER_OPS:
            raise Invalid(f"unknown filter operator {op!r}", field="filter")
        condition = {"column": column, "op": op}
        if op in ("in", "not_in"):
            condition["value"] = [_value(part, types.get(column, "")) for part in raw.split(",") if part.strip()]
        elif op not in ("is_null", "not_null"):
            condition["value"] = _value(raw, types.get(column, ""))
        filters.append(condition)
    if filters:
        spec["filter"] = filters
    if form.get("label_column"):
        spec["label_column"] = form["label_column"]
    if form.get("message", "").strip():
        spec["message"] = form["message"].strip()
    if not spec or set(spec) == {"message"}:
        raise Invalid("say what to change: paths to remove, relabels, row filters or the label column")
    return spec


def _stats_side_by_side(diff: dict) -> list[dict]:
    """Per column: its statistics in the from and to versions (None where the column is absent)."""
    stats = diff.get("stats") or {}
    before = {c["name"]: c for c in (stats.get("from") or {}).get("column_stats") or []}
    after = {c["name"]: c for c in (stats.get("to") or {}).get("column_stats") or []}
    names = list(before) + [n for n in after if n not in before]
    return [{"name": n, "from": before.get(n), "to": after.get(n)} for n in names]


def _labels_side_by_side(diff: dict) -> list[dict]:
    """Per label: its count in the from and to versions and the change."""
    stats = diff.get("stats") or {}
    before = (stats.get("from") or {}).get("label_distribution") or {}
    after = (stats.get("to") or {}).get("label_distribution") or {}
    labels = list(before) + [lb for lb in after if lb not in before]
    return [{"label": lb, "from": before.get(lb, 0), "to": after.get(lb, 0),
             "delta": after.get(lb, 0) - before.get(lb, 0)} for lb in labels]
