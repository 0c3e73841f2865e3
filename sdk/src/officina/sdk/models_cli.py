"""``officina models …``, ``officina deployments …`` and ``officina predict``."""
from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

import click

from officina import sdk
from officina.sdk.errors import Conflict, OfficinaError

_team = click.option("--team", help="Team (default: your only team, or OFFICINA_TEAM).")


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except Conflict as exc:
        gates = (exc.details or {}).get("gates") if hasattr(exc, "details") else None
        for gate in gates or []:
            click.echo(f"  {'pass' if gate['passed'] else 'FAIL'}  {gate['gate']}: {gate['detail']}", err=True)
        raise click.ClickException(str(exc)) from None
    except (OfficinaError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


def _print_gates(gates: list[dict]) -> None:
    for gate in gates:
        click.echo(f"  {'pass' if gate['passed'] else 'FAIL'}  {gate['gate']}: {gate['detail']}")


@click.group("models", context_settings={"help_option_names": ["-h", "--help"]})
def models() -> None:
    """The model registry: versions, gates, promotion, exports."""


@models.command("list")
@_team
def list_models(team: str | None) -> None:
    """The team's models with their latest version and aliases."""
    with _user_errors():
        rows = sdk.models.list(team)
    for m in rows:
        aliases = ", ".join(f"{a}=v{v}" for a, v in sorted((m.get("aliases") or {}).items()))
        click.echo(f"{m['name']:<30} v{m['latest_version'] or '-':<5} {aliases}")


@models.command("show")
@click.argument("name")
@click.option("--version", "ref", default="latest", show_default=True, help="Number, 'latest' or an alias.")
@_team
def show(name: str, ref: str, team: str | None) -> None:
    """A version: signature, lineage, exports and its latest evaluation."""
    with _user_errors():
        version = sdk.models.get(name, ref, team=team)
    click.echo(json.dumps(version.data, indent=2, default=str))


@models.command("register")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--signature", help="JSON input/output schema (needed for TorchScript files).")
@_team
def register(name: str, path: str, signature: str | None, team: str | None) -> None:
    """Register a TorchScript (.pt) or ONNX (.onnx) file as a new version of NAME."""
    with _user_errors():
        version = sdk.models.register(name, path, signature=json.loads(signature) if signature else None, team=team)
    click.echo(f"registered {version.model} v{version.version}")


@models.command("evaluate")
@click.argument("name")
@click.option("--version", "ref", default="latest", show_default=True)
@click.option("--alias", default="production", show_default=True, help="The alias the gates compare against.")
@_team
def evaluate(name: str, ref: str, alias: str, team: str | None) -> None:
    """Evaluate a version under the model's gate policy and print the gates."""
    with _user_errors():
        result = sdk.models.get(name, ref, team=team).evaluate(alias)
    if result["state"] != "succeeded":
        raise click.ClickException(f"evaluation {result['state']}: {result['reason']}")
    click.echo(json.dumps((result.get("results") or {}).get("metrics"), indent=2))
    _print_gates(result.get("gates") or [])
    if not result.get("passed"):
        sys.exit(1)


@models.command("promote")
@click.argument("name")
@click.argument("alias")
@click.option("--version", "ref", required=True, help="The version to move ALIAS to.")
@click.option("--override-reason", help="Team admins: promote despite failing gates, for this reason.")
@_team
def promote(name: str, alias: str, ref: str, override_reason: str | None, team: str | None) -> None:
    """Move ALIAS (e.g. production) to a version if its gates pass."""
    with _user_errors():
        result = sdk.models.get(name, ref, team=team).promote(alias, override_reason=override_reason)
    _print_gates(result["gates"])
    click.echo(f"{name}: {alias} -> v{result['version']} ({result['outcome']})")


@models.command("export")
@click.argument("name")
@click.argument("fmt", type=click.Choice(["onnx", "torchscript", "onnx_int8"]))
@click.option("--version", "ref", default="latest", show_default=True)
@click.option("-o", "--output", type=click.Path(), help="Also download the export here.")
@_team
def export(name: str, fmt: str, ref: str, output: str | None, team: str | None) -> None:
    """Export a version to ONNX, TorchScript or int8 ONNX; print size, latency and parity."""
    with _user_errors():
        version = sdk.models.get(name, ref, team=team)
        result = version.export(fmt)
        if result["state"] != "succeeded":
            raise click.ClickException(f"export {result['state']}: {result['reason']}")
        click.echo(json.dumps(result["report"], indent=2))
        if output:
            click.echo(f"wrote {version.download(output, fmt)}")


@models.command("batch")
@click.argument("name")
@click.argument("dataset")
@click.option("--version", "ref", default="production", show_default=True, help="The model version to score with.")
@click.option("--dataset-version", default="latest", show_default=True)
@click.option("--output", help="Output dataset (default: DATASET-predictions).")
@_team
def batch(name: str, dataset: str, ref: str, dataset_version: str, output: str | None, team: str | None) -> None:
    """Score every row of DATASET with model NAME; the result is a new version of the output dataset."""
    with _user_errors():
        result = sdk.models.get(name, ref, team=team).predict_batch(dataset, dataset_version, output=output)
    if result["state"] != "succeeded":
        raise click.ClickException(f"batch prediction {result['state']}: {result['reason']}")
    click.echo(f"scored {result['rows']} rows of {dataset} v{result['source']['version']} -> "
               f"{result['output']['dataset']} v{result['output']['version']}")


@click.group("deployments", context_settings={"help_option_names": ["-h", "--help"]})
def deployments() -> None:
    """Deployments: routes to model versions (canary, shadow), revisions, rollback."""


@deployments.command("list")
@_team
def list_deployments(team: str | None) -> None:
    with _user_errors():
        rows = sdk.deployments.list(team)
    for d in rows:
        routes = ", ".join(f"{r['model']}:v{r['version']}={r['weight']}%" for r in d["routes"])
        shadow = f"  shadow {d['shadow']['model']}:v{d['shadow']['version']}" if d.get("shadow") else ""
        click.echo(f"{d['name']:<30} r{d['revision']:<4} {routes}{shadow}")


@deployments.command("create")
@click.argument("name")
@click.option("--route", "routes", multiple=True, required=True, help="MODEL:VERSION=WEIGHT (weights add to 100).")
@click.option("--shadow", help="MODEL:VERSION getting copies of the requests.")
@click.option("--max-batch-size", type=int)
@click.option("--max-wait-ms", type=float)
@_team
def create(name: str, routes: tuple[str, ...], shadow: str | None, max_batch_size: int | None,
           max_wait_ms: float | None, team: str | None) -> None:
    """Deploy NAME: e.g. --route digits:3=90 --route digits:4=10."""
    parsed = []
    for route in routes:
        ref, _, weight = route.partition("=")
        model, _, version = ref.partition(":")
        if not weight.isdigit() or not model:
            raise click.BadParameter(f"{route!r}: use MODEL:VERSION=WEIGHT", param_hint="--route")
        parsed.append((model, version or "latest", int(weight)))
    settings = {k: v for k, v in (("max_batch_size", max_batch_size), ("max_wait_ms", max_wait_ms)) if v is not None}
    with _user_errors():
        deployment = sdk.deployments.create(name, parsed, shadow=shadow, team=team, **settings)
    click.echo(f"{deployment!r}\npredict: POST {deployment.url}")


@deployments.command("rollback")
@click.argument("name")
@click.option("--revision", type=int, help="Default: the previous revision.")
def rollback(name: str, revision: int | None) -> None:
    with _user_errors():
        deployment = sdk.deployments.get(name).rollback(revision)
    click.echo(repr(deployment))


@deployments.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    with _user_errors():
        sdk.deployments.get(name).delete()
    click.echo(f"deleted {name}")


@click.command("predict")
@click.argument("deployment")
@click.argument("rows", default="-")
def predict(deployment: str, rows: str) -> None:
    """Send ROWS (a JSON list of rows, or '-' to read it from stdin) to DEPLOYMENT."""
    text = sys.stdin.read() if rows == "-" else rows
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="ROWS") from None
    with _user_errors():
        answer = sdk.deployments.get(deployment).predict(parsed)
    click.echo(json.dumps(answer))
