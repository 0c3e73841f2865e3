"""``officina queue``, ``officina fleet`` and ``officina quota …``: the scheduler's view from the shell."""
from __future__ import annotations

import click

from officina import sdk
from officina.sdk.errors import OfficinaError

PRIORITY_NAMES = {10: "high", 0: "normal", -10: "low"}


def _number(kind):
    """A click type: a number, or ``none`` for no cap."""
    def convert(text: str):
        if text.lower() in ("none", "unlimited", ""):
            return None
        try:
            return kind(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a number (or 'none')") from None
    return convert


@click.command("queue")
@click.option("--limit", default=100, show_default=True)
def queue(limit) -> None:
    """Running and queued jobs (in scheduling order) with where they run or why they wait."""
    try:
        for j in sdk.admin.queue(limit):
            where = j["reason"] if j["state"] == "queued" else (
                f"{j['worker']} GPU {','.join(map(str, j['gpu_indices']))}" if j["worker"] else j["reason"])
            click.echo(f"{j['id'][:8]}  {j['team']:<16} {j['state']:<9} {j['gpus']} GPU  "
                       f"{PRIORITY_NAMES.get(j['priority'], j['priority']):<6}  {where}")
    except OfficinaError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("fleet")
def fleet() -> None:
    """Workers and who holds each GPU."""
    try:
        state = sdk.admin.scheduler()
        click.echo(f"scheduler leader: {state['leader'] or 'none'}")
        for w in sdk.admin.workers():
            click.echo(f"{w['name']}  {w['status']}  queues {','.join(w['queues'])}  {w['cpus']} CPUs"
                       f"{'  (simulated GPUs)' if w['simulated'] else ''}")
            for g in w["gpus"]:
                h = g["holder"]
                click.echo(f"  GPU {g['index']} {g['model']}: " +
                           (f"{h['team']} job {h['job_id'][:8]} ({h['job_name']})" if h else "free"))
    except OfficinaError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("quota")
def quota() -> None:
    """Show or set a team's GPU quota (setting needs a site admin)."""


@quota.command("show")
@click.argument("team", required=False)
def show(team) -> None:
    try:
        rows = [sdk.admin.quota(team)] if team else sdk.admin.quotas()
        for q in rows:
            cap = "no cap" if q["max_gpus"] is None else q["max_gpus"]
            budget = "no budget" if q["gpu_hours_per_week"] is None else f"{q['gpu_hours_per_week']:g} h/week"
            click.echo(f"{q['team']:<16} GPUs {q['gpus_in_use']}/{cap}  {q['gpu_hours_this_week']:.1f} h used of "
                       f"{budget}  max priority {q['max_priority']}  weight {q['weight']:g}")
    except OfficinaError as exc:
        raise click.ClickException(str(exc)) from None


@quota.command("set")
@click.argument("team")
@click.option("--gpus", type=_number(int), help="Most GPUs the team may hold at once ('none': no cap).")
@click.option("--gpu-hours", type=_number(float), help="GPU-hours per week ('none': no budget).")
@click.option("--max-priority", type=click.Choice(["low", "normal", "high"]))
@click.option("--weight", type=float, help="Fair-share weight.")
def set_(team, gpus, gpu_hours, max_priority, weight) -> None:
    """Change a team's quota; only the options given change ('none' removes a cap)."""
    ctx = click.get_current_context()
    given = {field: ctx.params[option] for option, field in (("gpus", "gpus"), ("gpu_hours", "gpu_hours_per_week"),
                                                             ("max_priority", "max_priority"), ("weight", "weight"))
             if ctx.get_parameter_source(option) is not click.core.ParameterSource.DEFAULT}
    if not given:
        raise click.UsageError("give at least one of --gpus, --gpu-hours, --max-priority, --weight")
    try:
        q = sdk.admin.set_quota(team, **given)
    except OfficinaError as exc:
        raise click.ClickException(str(exc)) from None
    cap = "no cap" if q["max_gpus"] is None else q["max_gpus"]
    budget = "no budget" if q["gpu_hours_per_week"] is None else f"{q['gpu_hours_per_week']:g} GPU-hours/week"
    click.echo(f"{q['team']}: max GPUs {cap}, {budget}, max priority {q['max_priority']}, weight {q['weight']:g}")
