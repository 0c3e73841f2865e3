"""``officina datasets …``: datasets from the shell, over HTTP with ``OFFICINA_URL`` and ``OFFICINA_TOKEN``.

A click group that ``officina`` mounts; it uses the SDK alone (nothing of the server).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import click

from officina import sdk
from officina.sdk.errors import OfficinaError

_team_option = click.option("--team", default=None, help="The team (default: your only team).")


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """SDK and file errors as one line on stderr and exit code 1, never a traceback."""
    try:
        yield
    except OfficinaError as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: run the same upload again to resume it") from None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def _version_line(version: sdk.datasets.DatasetVersion) -> str:
    data = version.data
    rows = f", {data['row_count']:,} rows" if data.get("row_count") is not None else ""
    tags = f" [{', '.join(version.tags)}]" if version.tags else ""
    files = data.get("file_count", len(version.files))
    return f"{version.name} version {version.number}{tags}: {version.kind}, {files:,} files, " \
           f"{_size(data.get('total_bytes'))}{rows}"


@click.group("datasets", context_settings={"help_option_names": ["-h", "--help"]})
def datasets() -> None:
    """Datasets on an Officina server (OFFICINA_URL, OFFICINA_TOKEN)."""


@datasets.command("upload")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@_team_option
@click.option("--kind", type=click.Choice(["tabular", "text", "images", "files"]), default=None,
              help="What the data is (default: inferred).")
@click.option("--label-column", default=None, help="The label column of a table.")
@click.option("--text-column", default=None, help="The text column of a text dataset.")
@click.option("-m", "--message", default="", help="A note saved with the version.")
@click.option("--base", default=None, help="Start from this version's files (number or tag) and add these.")
@click.option("--parallel", type=click.IntRange(1, 64), default=4, show_default=True, help="Concurrent transfers.")
@click.option("--no-progress", is_flag=True, help="Draw no progress bar.")
def upload(name: str, path: str, team: str | None, kind: str | None, label_column: str | None,
           text_column: str | None, message: str, base: str | None, parallel: int, no_progress: bool) -> None:
    """Upload a file or a folder as the next version of NAME (resumes an interrupted upload)."""
    with _user_errors():
        version = sdk.datasets.upload(name, path, team=team, kind=kind, label_column=label_column,
                                      text_column=text_column, message=message, base=base,
                                      progress=not no_progress, parallel=parallel)
    click.echo(_version_line(version))


@datasets.command("list")
@_team_option
def list_datasets(team: str | None) -> None:
    """The datasets of a team."""
    with _user_errors():
        found = sdk.datasets.list(team=team)
    if not found:
        click.echo("no datasets")
    for dataset in found:
        click.echo(f"{dataset['name']}\t{dataset.get('kind') or '?'}\tlatest {dataset.get('latest')}")


@datasets.command("show")
@click.argument("name")
@click.option("--version", "ref", default=None, help="A version number or tag (default: latest).")
@_team_option
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def show(name: str, ref: str | None, team: str | None, as_json: bool) -> None:
    """One version of NAME: kind, size, tags, splits and files; without --version, also the history."""
    with _user_errors():
        version = sdk.datasets.get(name, ref, team=team)
        history = sdk.datasets.info(name, team=team) if ref is None else None
    if as_json:
        click.echo(json.dumps(version.data, indent=2, default=str))
        return
    click.echo(_version_line(version))
    if version.message:
        click.echo(f"  message: {version.message}")
    if version.label_column or version.text_column:
        click.echo(f"  label: {version.label_column or '-'}   text: {version.text_column or '-'}")
    if version.parent is not None:
        click.echo(f"  from version {version.parent} ({version.origin.get('source', '?')})")
    if version.split_summary:
        click.echo("  splits: " + ", ".join(f"{k} {v.get('count')}" for k, v in version.split_summary.items()))
    for entry in version.files[:10]:
        label = f"  [{entry['label']}]" if entry.get("label") is not None else ""
        click.echo(f"  {entry['path']}  {_size(entry.get('size'))}{label}")
    if len(version.files) > 10:
        click.echo(f"  … and {len(version.files) - 10:,} more files")
    if history:
        click.echo("versions:")
        for item in history.get("versions", []):
            tags = f" [{', '.join(item.get('tags') or [])}]" if item.get("tags") else ""
            click.echo(f"  {item['number']}{tags}  {item.get('created_at', '')}  {item.get('message') or ''}".rstrip())


@datasets.command("diff")
@click.argument("name")
@click.argument("a")
@click.argument("b")
@_team_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole diff as JSON.")
def diff(name: str, a: str, b: str, team: str | None, as_json: bool) -> None:
    """What changed from version A to version B of NAME."""
    with _user_errors():
        answer = sdk.datasets.diff(name, a, b, team=team)
    if as_json:
        click.echo(json.dumps(answer, indent=2, default=str))
        return
    files = answer.get("files") or {}
    summary = files.get("summary") or {}
    click.echo(f"{name} {a} → {b}")
    click.echo("files: " + ", ".join(f"{summary.get(k, 0):,} {k}" for k in
                                     ("added", "removed", "changed", "relabeled", "unchanged")))
    for sign, key in (("+", "added"), ("-", "removed")):
        for entry in (files.get(key) or [])[:20]:
            click.echo(f"  {sign} {entry['path']}")
    for entry in (files.get("changed") or [])[:20]:
        click.echo(f"  ~ {entry['path']}")
    for entry in (files.get("relabeled") or [])[:20]:
        click.echo(f"  ~ {entry['path']}: {entry.get('old_label')} → {entry.get('new_label')}")
    rows = answer.get("rows")
    if rows:
        click.echo("rows: " + ", ".join(f"{rows.get(k, 0):,} {k}" for k in ("added", "removed", "unchanged")))
        for key in ("columns_added", "columns_removed"):
            if rows.get(key):
                click.echo(f"{key.replace('_', ' ')}: {', '.join(rows[key])}")


@datasets.command("split")
@click.argument("name")
@click.option("--version", "ref", default=None, help="The version to split (default: latest).")
@click.option("--train", type=float, default=0.8, show_default=True)
@click.option("--val", type=float, default=0.1, show_default=True)
@click.option("--test", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-stratify", is_flag=True, help="Do not keep label proportions in each split.")
@click.option("-m", "--message", default="")
@_team_option
def split(name: str, ref: str | None, train: float, val: float, test: float, seed: int, no_stratify: bool,
          message: str, team: str | None) -> None:
    """Make a new version of NAME with a train/val/test split."""
    fractions: dict[str, Any] = {k: v for k, v in {"train": train, "val": val, "test": test}.items() if v}
    with _user_errors():
        version = sdk.datasets.get(name, ref, team=team).split(fractions, seed=seed, stratify=not no_stratify,
                                                              message=message, progress=True)
    click.echo(_version_line(version))
    for key, value in (version.split_summary or {}).items():
        click.echo(f"  {key}: {value.get('count')}")


@datasets.command("tag")
@click.argument("name")
@click.argument("tag")
@click.argument("version")
@_team_option
def tag(name: str, tag: str, version: str, team: str | None) -> None:
    """Point TAG at VERSION of NAME (creating or moving it)."""
    with _user_errors():
        answer = sdk.datasets.tag(name, tag, version, team=team)
    click.echo(f"{name}: {answer.get('tag', tag)} → version {answer.get('version', version)}")


@datasets.command("untag")
@click.argument("name")
@click.argument("tag")
@_team_option
def untag(name: str, tag: str, team: str | None) -> None:
    """Remove TAG from NAME."""
    with _user_errors():
        sdk.datasets.untag(name, tag, team=team)
    click.echo(f"{name}: removed tag {tag}")


@datasets.command("download")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--version", "ref", default=None, help="A version number or tag (default: latest).")
@_team_option
def download(name: str, directory: str, ref: str | None, team: str | None) -> None:
    """Write the files of a version of NAME under DIRECTORY."""
    with _user_errors():
        version = sdk.datasets.get(name, ref, team=team)
        version.download(directory)
    click.echo(f"wrote {len(version.files):,} files of {name} version {version.number} to {directory}")
