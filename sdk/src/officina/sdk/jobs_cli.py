"""``officina submit`` and ``officina jobs …``: submit code or a built-in trainer, follow it, cancel it."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from officina import sdk
from officina.sdk.errors import OfficinaError


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key] = value
    return out


def _value(text: str) -> Any:
    """Command-line parameter values are JSON when they parse as JSON (numbers, true, lists), else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _fail(exc: OfficinaError) -> click.ClickException:
    return click.ClickException(str(exc))


def _follow(job: sdk.jobs.Job) -> None:
    for line in job.logs(follow=True):
        click.echo(line)
    job.refresh()
    click.echo(f"job {job.id} {job.data['state']}: {job.reason}", err=True)
    if job.data["state"] != "succeeded":
        sys.exit(1)


@click.command("submit")
@click.argument("entrypoint", required=False)
@click.option("--code-dir", default=".", show_default=True, help="Directory packed and sent with the job.")
@click.option("--trainer", type=click.Choice(["tabular", "image", "text"]), help="A built-in trainer instead of code.")
@click.option("--dataset", "datasets", multiple=True, help="NAME=DATASET[:VERSION]; for trainers DATASET[:VERSION].")
@click.option("-p", "--param", "params", multiple=True, help="KEY=VALUE (JSON values parse: lr=0.01).")
@click.option("--project", default="default", show_default=True)
@click.option("--name")
@click.option("--team")
@click.option("--gpus", default=0, show_default=True, type=int)
@click.option("--cpus", default=1.0, show_default=True, type=float)
@click.option("--memory", default="4Gi", show_default=True)
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default="normal", show_default=True)
@click.option("--timeout", default="2h", show_default=True)
@click.option("--max-retries", default=2, show_default=True, type=int)
@click.option("-f", "--follow", is_flag=True, help="Print the job's log until it ends; exit 1 unless it succeeds.")
def submit(entrypoint, code_dir, trainer, datasets, params, project, name, team, gpus, cpus, memory, priority,
           timeout, max_retries, follow) -> None:
    """Submit ENTRYPOINT (a script in --code-dir) or --trainer as a job."""
    try:
        named = {}
        single = None
        for item in datasets:
            if "=" in item:
                named.update(_pairs((item,), "--dataset"))
            else:
                single = item
        job = sdk.jobs.submit(entrypoint, code_dir, params={k: _value(v) for k, v in _pairs(params, "--param").items()},
                              datasets=named, gpus=gpus, cpus=cpus, memory=memory, priority=priority, name=name,
                              max_retries=max_retries, timeout=timeout, trainer=trainer, dataset=single,
                              project=project, team=team)
        click.echo(f"submitted job {job.id} ({job.data['name']}): {job.data['state']}")
        if follow:
            _follow(job)
    except OfficinaError as exc:
        raise _fail(exc) from None


@click.group("jobs")
def jobs() -> None:
    """List, follow and cancel jobs."""


@jobs.command("list")
@click.option("--team")
@click.option("--state")
@click.option("--project")
def list_jobs(team, state, project) -> None:
    try:
        for job in sdk.jobs.list(team, state=state, project=project):
            d = job.data
            click.echo(f"{job.id}  {d['state']:<10} {d['project']}/{d['name']}  attempt {d['attempt']}  "
                       f"{d['created_at'][:19]}  {d.get('reason', '')}")
    except OfficinaError as exc:
        raise _fail(exc) from None


@jobs.command("logs")
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True)
def logs(job_id, follow) -> None:
    try:
        job = sdk.jobs.get(job_id)
        if follow:
            _follow(job)
        else:
            for line in job.logs():
                click.echo(line)
    except OfficinaError as exc:
        raise _fail(exc) from None


@jobs.command("cancel")
@click.argument("job_id")
def cancel(job_id) -> None:
    try:
        job = sdk.jobs.get(job_id).cancel()
        click.echo(f"job {job.id}: {job.data['state']}{' (stopping)' if job.data['cancel_requested'] else ''}")
    except OfficinaError as exc:
        raise _fail(exc) from None


@jobs.command("show")
@click.argument("job_id")
def show(job_id) -> None:
    try:
        job = sdk.jobs.get(job_id)
        click.echo(json.dumps({**job.data, "events": job.events()}, indent=2))
    except OfficinaError as exc:
        raise _fail(exc) from None
