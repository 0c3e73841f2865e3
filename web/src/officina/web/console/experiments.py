"""Console pages for experiments: the runs table, a run's page with live charts, and a comparison of runs."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from flask import render_template, request, url_for

from officina.platform.errors import Invalid, OfficinaError
from officina.web.auth import current_principal, services
from officina.web.console.views import bp

STATUSES = ("running", "finished", "failed", "killed")
LIST_LIMIT = 200
MAX_COMPARE = 10
DEFAULT_COLUMNS = 4  # of each kind, when the query string names none
# One color per compared run (charts, parallel coordinates, table swatches); distinct and readable on white.
PALETTE = ("#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#5c940d", "#862e9c",
           "#495057")


def flatten(values: dict | None, prefix: str = "") -> dict[str, Any]:
    """Nested params as one level, keys joined with dots: ``{"opt": {"lr": 1}}`` -> ``{"opt.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in (values or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fmt(value: Any) -> str:
    """A param or metric value for a table cell: 4 significant digits for floats, JSON for structures."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _number(value: float) -> str:
    """Like the console's JavaScript: 4 significant digits, no trailing zeros, ``3.29e-7`` when tiny or huge."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if value != 0 and not 1e-4 <= abs(value) < 1e6:
        mantissa, exponent = f"{value:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent):+d}"
    short = float(f"{value:.4g}")
    return str(int(short)) if short == int(short) else repr(short)


def duration(start: datetime | None, end: datetime | None) -> str:
    """``1h 02m``, ``3m 04s`` or ``12s`` between two times (until now when ``end`` is None)."""
    if start is None:
        return ""
    seconds = int(((end or datetime.now(timezone.utc)) - start).total_seconds())
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{max(seconds, 0)}s"


def _columns(runs: list, params: dict[str, dict], chosen: list[str] | None) -> list[tuple[str, str]]:
    """The chosen ``(kind, key)`` columns; by default the params whose values differ between the runs that
    have them, and the first few metrics."""
    if chosen is not None:
        return [(c[0], c[2:]) for c in chosen if c[:2] in ("p:", "m:") and len(c) > 2]
    param_keys = sorted({k for p in params.values() for k in p})
    differing = [k for k in param_keys if len({fmt(params[r.id][k]) for r in runs if k in params[r.id]}) > 1]
    metric_keys = sorted({k for r in runs for k in r.metrics if not k.startswith("system/")})
    return ([("p", k) for k in differing[:DEFAULT_COLUMNS]] + [("m", k) for k in metric_keys[:DEFAULT_COLUMNS]])


def _sort_link(key: str, sort: str) -> str:
    """The runs table sorted by metric ``key``: descending first, then flipping."""
    target = f"metric:{key}:asc" if sort == f"metric:{key}:desc" else f"metric:{key}:desc"
    args = request.args.to_dict(flat=False)
    args["sort"] = [target]
    return url_for("console.experiments", **args)


@bp.get("/experiments")
def experiments():
    """A team's runs: filtered, sorted by creation or a metric, with the chosen param and metric columns."""
    principal = current_principal()
    svc = services()
    teams = svc.auth.list_teams(principal)
    names = [t.name for t in teams]
    team = request.args.get("team") if request.args.get("team") in names else (names[0] if names else None)
    project = request.args.get("project") or None
    status = request.args.get("status") if request.args.get("status") in STATUSES else None
    q = (request.args.get("q") or "").strip() or None
    sort = request.args.get("sort") or "created"
    runs, projects, error = [], [], None
    if team:
        try:
            projects = svc.tracking.projects(principal, team)
            runs = svc.tracking.list(principal, team, project=project, status=status, q=q,
                                     sort=None if sort == "created" else sort, limit=LIST_LIMIT)
        except OfficinaError as exc:
            error = exc.message
    params = {r.id: flatten(r.params) for r in runs}
    chosen = request.args.getlist("col") if request.args.get("colset") else None
    columns = _columns(runs, params, chosen)
    available_params = sorted({k for p in params.values() for k in p} | {k for kind, k in columns if kind == "p"})
    all_metrics = sorted({k for r in runs for k in r.metrics} | {k for kind, k in columns if kind == "m"})
    sort_key = sort.split(":")[1] if sort.startswith("metric:") else None
    if sort_key and sort_key not in all_metrics:
        all_metrics = sorted({*all_metrics, sort_key})
    sortable = [k for k in all_metrics if ":" not in k]  # sort=metric:<key>:desc cannot name a key with a colon
    return render_template("experiments.html", teams=teams, team=team, projects=projects, project=project,
                           statuses=STATUSES, status=status, q=q or "", sort=sort, sort_key=sort_key,
                           runs=runs, params=params, columns=columns, available_params=available_params,
                           available_metrics=all_metrics, sortable=sortable, error=error, fmt=fmt, duration=duration,
                           sort_link=lambda key: _sort_link(key, sort), limit=LIST_LIMIT, max_compare=MAX_COMPARE)


@bp.get("/experiments/runs/<run_id>")
def run(run_id: str):
    """One run: header, params, live metric charts, artifacts, checkpoints and dataset lineage."""
    principal = current_principal()
    tracking = services().tracking
    record = tracking.get(principal, run_id)
    return render_template("run.html", run=record, params=flatten(record.params),
                           metrics=tracking.metrics(principal, run_id), artifacts=tracking.artifacts(principal, run_id),
                           checkpoints=tracking.checkpoints(principal, run_id),
                           lineage=tracking.lineage(principal, run_id), fmt=fmt, duration=duration)


def _compare_ids() -> list[str]:
    """Run ids from ``?runs=a,b,c`` (or repeated ``run=`` from the table without JavaScript), in order, once each."""
    raw = request.args.getlist("runs") + request.args.getlist("run")
    ids = [part.strip() for value in raw for part in value.split(",") if part.strip()]
    return list(dict.fromkeys(ids))


@bp.get("/experiments/compare")
def compare():
    """Several runs side by side: overlaid charts, a params diff and parallel coordinates."""
    principal = current_principal()
    tracking = services().tracking
    ids = _compare_ids()
    runs, error = [], None
    try:
        if not 2 <= len(ids) <= MAX_COMPARE:
            raise Invalid(f"pick between 2 and {MAX_COMPARE} runs to compare (got {len(ids)})", field="runs")
        runs = [tracking.get(principal, run_id) for run_id in ids]
    except OfficinaError as exc:
        error = exc.message
    params = {r.id: flatten(r.params) for r in runs}
    keys = sorted({k for p in params.values() for k in p})
    rows = []
    for key in keys:
        shown = [fmt(params[r.id].get(key)) if key in params[r.id] else None for r in runs]
        rows.append({"key": key, "values": shown, "differs": len(set(shown)) > 1})
    data = [{"id": r.id, "name": r.name, "project": r.project, "team": r.team, "status": r.status,
             "color": PALETTE[i], "params": params[r.id], "metrics": r.metrics} for i, r in enumerate(runs)]
    metric_keys = sorted({k for r in runs for k in r.metrics if not k.startswith("system/")})
    return render_template("compare.html", runs=runs, rows=rows, data=data, error=error, fmt=fmt, palette=PALETTE,
                           duration=duration, metric_keys=metric_keys,
                           differing=sum(1 for row in rows if row["differs"]))
