"""``officina tune`` and ``officina studies …``: start a hyper-parameter study and follow it."""
from __future__ import annotations

import json
import sys
import time

import click

from officina import sdk
from officina.sdk.errors import OfficinaError
from officina.sdk.jobs_cli import _pairs, _value


def _fail(exc: OfficinaError) -> click.ClickException:
    return click.ClickException(str(exc))


def _print_trials(study: sdk.Study) -> None:
    for t in study.trials:
        value = "" if t["value"] is None else f"{t['value']:.6g}"
        click.echo(f"  trial {t['number']:>3}  {t['state']:<9} {value:>12}  {json.dumps(t['params'])}"
                   f"{'  ' + t['reason'] if t['reason'] else ''}")


def _follow(study: sdk.Study) -> None:
    seen: dict[int, str] = {}
    while True:
        study.refresh()
        for t in study.trials:
            if seen.get(t["number"]) != t["state"]:
                seen[t["number"]] = t["state"]
                value = "" if t["value"] is None else f" {t['value']:.6g}"
                click.echo(f"trial {t['number']} {t['state']}{value} {json.dumps(t['params'])}")
        if study.state not in ("running",):
            break
        time.sleep(2)
    click.echo(f"study {study.data['name']} {study.state}: {study.data['reason']}", err=True)
    if study.best:
        click.echo(f"best: trial {study.best['number']} = {study.best['value']:.6g} {json.dumps(study.best['params'])}")
    if study.state != "succeeded":
        sys.exit(1)


@click.command("tune")
@click.argument("entrypoint", required=False)
@click.option("--code-dir", default=".", show_default=True, help="Directory packed and sent with each trial.")
@click.option("--trainer", type=click.Choice(["tabular", "image", "text"]), help="A built-in trainer instead of code.")
@click.option("--dataset", "datasets", multiple=True, help="NAME=DATASET[:VERSION]; for trainers DATASET[:VERSION].")
@click.option("--space", required=True, help='JSON: {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": true}, …}'
              " or @file.json")
@click.option("-p", "--param", "params", multiple=True, help="A fixed KEY=VALUE for every trial.")
@click.option("--metric", required=True, help="The metric trials log (e.g. val_acc).")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@click.option("--trials", default=20, show_default=True, type=int)
@click.option("--parallel", default=1, show_default=True, type=int)
@click.option("--algorithm", type=click.Choice(["tpe", "random", "grid", "cmaes"]), default="tpe", show_default=True)
@click.option("--early-stopping", type=click.Choice(["asha", "hyperband", "median"]))
@click.option("--budget", help="e.g. '2 GPU-hours' or '90m'.")
@click.option("--name")
@click.option("--team")
@click.option("--gpus", default=0, show_default=True, type=int)
@click.option("-f", "--follow", is_flag=True, help="Print trials as they end; exit 1 unless the study succeeds.")
def tune(entrypoint, code_dir, trainer, datasets, space, params, metric, mode, trials, parallel, algorithm,
         early_stopping, budget, name, team, gpus, follow) -> None:
    """Run a hyper-parameter study of ENTRYPOINT (in --code-dir) or --trainer."""
    try:
        text = open(space[1:]).read() if space.startswith("@") else space
        parsed = json.loads(text)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--space") from None
    named, single = {}, None
    for item in datasets:
        if "=" in item:
            named.update(_pairs((item,), "--dataset"))
        else:
            single = item
    try:
        study = sdk.tune(entrypoint, space=parsed, metric=metric, mode=mode, trials=trials, parallel=parallel,
                         algorithm=algorithm, early_stopping=early_stopping, budget=budget, name=name,
                         code_dir=code_dir, params={k: _value(v) for k, v in _pairs(params, "--param").items()},
                         datasets=named, trainer=trainer, dataset=single, gpus=gpus, team=team)
        click.echo(f"started study {study.data['name']} ({study.id})")
        if follow:
            _follow(study)
    except OfficinaError as exc:
        raise _fail(exc) from None


@click.group("studies")
def studies() -> None:
    """List, show, stop and extend hyper-parameter studies."""


@studies.command("list")
@click.option("--team")
def list_studies(team) -> None:
    try:
        for s in sdk.tuning.list(team):
            best = s.best["value"] if s.best else None
            click.echo(f"{s.id}  {s.state:<9} {s.data['name']}  best {'-' if best is None else f'{best:.6g}'}"
                       f"  {s.data['reason']}")
    except OfficinaError as exc:
        raise _fail(exc) from None


@studies.command("show")
@click.argument("study_id")
def show(study_id) -> None:
    try:
        s = sdk.tuning.get(study_id)
        click.echo(f"{s.data['name']}  {s.state}  {s.data['reason']}")
        if s.best:
            click.echo(f"best: trial {s.best['number']} = {s.best['value']:.6g} {json.dumps(s.best['params'])}")
        _print_trials(s)
    except OfficinaError as exc:
        raise _fail(exc) from None


@studies.command("stop")
@click.argument("study_id")
def stop(study_id) -> None:
    try:
        s = sdk.tuning.get(study_id).stop()
        click.echo(f"{s.data['name']}: {s.state}")
    except OfficinaError as exc:
        raise _fail(exc) from None


@studies.command("extend")
@click.argument("study_id")
@click.argument("trials", type=int)
def extend(study_id, trials) -> None:
    try:
        s = sdk.tuning.get(study_id).extend(trials)
        click.echo(f"{s.data['name']}: {s.state}, {s.data['spec']['trials']} trials in all")
    except OfficinaError as exc:
        raise _fail(exc) from None
