"""The ``officina`` command: run the platform, migrate, and manage accounts from the shell."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

import click
import psycopg

from officina.platform.auth.service import AuthService
from officina.platform.db import migrate as apply_migrations
from officina.platform.db import open_pool
from officina.platform.errors import OfficinaError
from officina.platform.logs import configure
from officina.platform.settings import Settings
from officina.sdk import admin_cli, jobs_cli, models_cli, tuning_cli
from officina.sdk.cli import datasets as datasets_group

logger = logging.getLogger(__name__)
ADMIN_PASSWORD_FILE = "initial-admin-password"


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's validation error names the variable
        raise click.ClickException(f"invalid OFFICINA_* configuration: {exc}") from None


@contextlib.contextmanager
def _auth(settings: Settings) -> Iterator[AuthService]:
    """An AuthService on this installation's database (migrated first)."""
    from officina.infra.stack import database_url

    with database_url(settings) as url:
        apply_migrations(url)
        pool = open_pool(url, max_size=2)
        try:
            yield AuthService(pool, token_ttl_days=settings.token_ttl_days)
        finally:
            pool.close()


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Show platform errors as one clear line instead of a traceback."""
    try:
        yield
    except OfficinaError as exc:
        raise click.ClickException(exc.message) from None
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot use the database: {str(exc).strip()}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Officina: a self-hosted machine-learning platform."""


@main.command()
def version() -> None:
    """Print Officina's version."""
    try:
        click.echo(package_version("officina"))
    except PackageNotFoundError:
        click.echo("unknown (not installed)")


@main.command()
def migrate() -> None:
    """Apply pending database migrations (safe to re-run, and to run concurrently)."""
    from officina.infra.stack import database_url

    settings = _settings()
    configure(settings.log_level)
    with database_url(settings) as url:
        applied = apply_migrations(url)
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "database is up to date")


@main.command()
@click.option("--workers", type=int, default=None, help="Celery worker processes (default OFFICINA_WORKER_PROCESSES).")
@click.option("--no-worker", is_flag=True, help="Start no Celery worker.")
def up(workers: int | None, no_worker: bool) -> None:
    """Run the whole platform until Ctrl-C: embedded services where no URL is set, then
    migrations, the web app and workers, supervised and restarted on crash."""
    from officina.infra.stack import Stack

    settings = _settings()
    configure(settings.log_level)
    stop = threading.Event()

    def _on_signal(signum, _frame):
        if stop.is_set():
            return
        click.echo(f"\n{signal.Signals(signum).name} received: stopping…", err=True)
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    stack = Stack(settings)
    try:
        with _user_errors():
            resolved = stack.start_services()
            applied = apply_migrations(resolved.database_url)
            if applied:
                click.echo(f"applied migrations: {', '.join(applied)}")
            password = _bootstrap_admin(resolved)
            stack.start("web")
            count = 0 if no_worker else (workers if workers is not None else resolved.worker_processes)
            for index in range(count):
                if stop.is_set():
                    break
                stack.start("worker", index)
            if count and not stop.is_set():
                stack.start("beat")  # periodic tasks (dataset garbage collection, the job sweep)
            if not stop.is_set():
                stack.start("scheduler")  # admits queued jobs to workers and their GPUs
            if resolved.serving_processes > 0 and not stop.is_set():
                stack.start("serving")  # the prediction server; its workers are the replicas
            if not stop.is_set():
                _print_banner(resolved, password)
                stack.supervise(stop)
    finally:
        stack.stop()
        click.echo("Officina stopped.", err=True)


def _bootstrap_admin(settings: Settings) -> str | None:
    pool = open_pool(settings.database_url, max_size=1)
    try:
        password = AuthService(pool).bootstrap_admin()
    finally:
        pool.close()
    if password:
        path = Path(settings.home) / ADMIN_PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
    return password


def _command_name() -> str:
    """How the user can run this CLI again: ``officina`` when on PATH, else its path."""
    import shutil

    me = Path(sys.argv[0]).resolve()
    found = shutil.which("officina")
    if found and Path(found).resolve() == me:
        return "officina"
    try:
        return str(me.relative_to(Path.cwd()))
    except ValueError:
        return str(me)


def _print_banner(settings: Settings, password: str | None) -> None:
    cli = _command_name()
    lines = ["", f"Officina is running: {settings.url}"]
    if settings.serving_processes > 0:
        lines.append(f"Predictions:         {settings.predict_url}/v1/deployments/<name>/predict")
    lines.append("")
    if password:
        lines += ["First start: an administrator was created.",
                  "  username: admin",
                  f"  password: {password}",
                  f"  (also saved, readable only by you, in {Path(settings.home) / ADMIN_PASSWORD_FILE};",
                  f"   change it with `{cli} user set-password admin`)"]
    else:
        lines += ["Log in with your account. Lost the admin password? Set a new one with:",
                  f"  {cli} user set-password admin"]
    lines += ["", f"API token for the SDK/CLI:  {cli} token create --user admin",
              f"Logs: {Path(settings.home) / 'logs'}    Stop: Ctrl-C", ""]
    click.echo("\n".join(lines))
    sys.stdout.flush()


main.add_command(datasets_group, "datasets")
main.add_command(jobs_cli.submit)
main.add_command(jobs_cli.jobs)
main.add_command(admin_cli.queue)
main.add_command(admin_cli.fleet)
main.add_command(admin_cli.quota)
main.add_command(tuning_cli.tune)
main.add_command(tuning_cli.studies)
main.add_command(models_cli.models)
main.add_command(models_cli.deployments)
main.add_command(models_cli.predict)


@main.group()
def user() -> None:
    """Manage users."""


@user.command("create")
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user a site administrator.")
@click.option("--team", default=None, help="Add the user to this team.")
@click.option("--role", type=click.Choice(["admin", "member", "viewer"]), default="member", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else one is generated).")
def user_create(username: str, is_admin: bool, team: str | None, role: str, password_stdin: bool) -> None:
    """Create a user straight in the database; prints a generated password once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with _user_errors():
        with _auth(_settings()) as auth:
            _, generated = auth.create_user(username, password, is_admin=is_admin, team=team, role=role)
    click.echo(f"created user {username}" + (f"\npassword: {generated}" if generated else ""))


@user.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else one is generated).")
def user_set_password(username: str, password_stdin: bool) -> None:
    """Set a user's password; prints a generated one once."""
    from officina.platform.auth.service import generate_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with _user_errors():
        with _auth(_settings()) as auth:
            auth.set_password(username, password)
    click.echo(f"password of {username} set" + ("" if password_stdin else f"\npassword: {password}"))


@main.group()
def team() -> None:
    """Manage teams."""


@team.command("create")
@click.argument("name")
@click.option("--description", default="")
def team_create(name: str, description: str) -> None:
    """Create a team."""
    with _user_errors():
        with _auth(_settings()) as auth:
            auth.create_team(None, name, description)
    click.echo(f"created team {name}")


@team.command("add")
@click.argument("name")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "member", "viewer"]), default="member", show_default=True)
def team_add(name: str, username: str, role: str) -> None:
    """Add a user to a team (or change their role)."""
    with _user_errors():
        with _auth(_settings()) as auth:
            auth.set_member(None, name, username, role)
    click.echo(f"{username} is now {role} of team {name}")


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.option("--user", "username", required=True, help="The user the token acts as.")
@click.option("--name", default="cli", show_default=True, help="A name to recognise the token by.")
@click.option("--expires-days", type=float, default=None, help="Lifetime in days (default: never expires).")
def token_create(username: str, name: str, expires_days: float | None) -> None:
    """Create an API token straight in the database and print it once."""
    with _user_errors():
        with _auth(_settings()) as auth:
            account = auth.get_user(username)
            _, plaintext = auth.create_token(account.id, name, expires_in_days=expires_days)
    click.echo(plaintext)
