"""Datasets: ``sdk.datasets.upload(name, path)`` and ``sdk.datasets.get(name, version=None)``."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk.errors import InvalidRequest


def _team(team: str | None) -> str:
    """The given team, or the caller's only team."""
    if team:
        return team
    teams = [t["name"] for t in sdk.whoami()["teams"]]
    if len(teams) != 1:
        raise InvalidRequest(f"you belong to {len(teams)} teams; pass team= (one of: {', '.join(teams)})")
    return teams[0]


def _base(team: str, name: str) -> str:
    return f"/teams/{quote(team, safe='')}/datasets/{quote(name, safe='')}"


class DatasetVersion:
    """One immutable version of a dataset: its metadata, files, stats and preview."""

    def __init__(self, team: str, name: str, data: dict[str, Any]):
        self.team, self.name, self.data = team, name, data
        self.number: int = data["number"]
        self.files: list[dict[str, Any]] = data.get("files", [])
        self.stats: dict[str, Any] = data.get("stats", {})
        self.schema = data.get("schema")
        self.label_column = data.get("label_column")

    def __repr__(self) -> str:
        return f"<DatasetVersion {self.team}/{self.name}:{self.number} files={len(self.files)}>"

    def read(self, path: str) -> bytes:
        """The bytes of one file of this version."""
        response = sdk.client().request_raw(
            "GET", f"{_base(self.team, self.name)}/versions/{self.number}/files/{quote(path)}")
        return response.content

    def download(self, directory: str | os.PathLike) -> Path:
        """Write every file of this version under ``directory``; return it."""
        root = Path(directory)
        for entry in self.files:
            target = root / entry["path"]
            if root.resolve() not in target.resolve().parents:
                raise InvalidRequest(f"refusing to write outside {root}: {entry['path']!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read(entry["path"]))
        return root

    def to_pandas(self):
        """A tabular or text version as a pandas DataFrame (needs pandas; Parquet needs pyarrow)."""
        import pandas as pd

        if len(self.files) != 1:
            raise InvalidRequest("to_pandas() reads tabular versions made of one file")
        path = self.files[0]["path"]
        data = io.BytesIO(self.read(path))
        fmt = self.data.get("format")
        if fmt == "parquet":
            return pd.read_parquet(data)
        if fmt == "jsonl":
            return pd.read_json(data, lines=True)
        return pd.read_csv(data)


def upload(name: str, path: str | os.PathLike, *, team: str | None = None, label_column: str | None = None,
           text_column: str | None = None, kind: str | None = None, message: str = "") -> DatasetVersion:
    """Upload a file (CSV, Parquet, JSONL, or a zip/tar of class folders) as the next version of ``name``."""
    team = _team(team)
    file_path = Path(path)
    form = {k: v for k, v in {"label_column": label_column, "text_column": text_column, "kind": kind,
                              "message": message}.items() if v}
    with open(file_path, "rb") as fh:
        body = sdk.client().request("POST", f"{_base(team, name)}/versions", data=form,
                                    files={"file": (file_path.name, fh)})
    return get(name, body["version"]["number"], team=team)


def get(name: str, version: int | str | None = None, *, team: str | None = None) -> DatasetVersion:
    """A version by number or tag (default: ``latest``)."""
    team = _team(team)
    ref = "latest" if version is None else str(version)
    body = sdk.client().get(f"{_base(team, name)}/versions/{quote(ref, safe='')}")
    return DatasetVersion(team, name, body["version"])


def list(team: str | None = None) -> list[dict[str, Any]]:  # noqa: A001 - reads as sdk.datasets.list()
    return sdk.client().get(f"/teams/{quote(_team(team), safe='')}/datasets")["datasets"]
