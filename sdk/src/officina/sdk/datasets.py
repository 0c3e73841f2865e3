"""Datasets: ``sdk.datasets.upload(name, path)``, ``get(name, version)``, and what a version can do.

A :class:`DatasetVersion` is immutable. Splitting, deriving and uploading make new versions through
builds on the server; this module waits for them and returns the new version. File contents are
fetched once into the local blob cache (see :mod:`officina.sdk.cache`) and read from there.
"""
from __future__ import annotations

import builtins
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from officina import sdk
from officina.sdk import uploads
from officina.sdk.cache import CHUNK, Cache
from officina.sdk.errors import InvalidRequest

DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _team(team: str | None) -> str:
    from officina.sdk.teams import resolve

    return resolve(team)


def _check_name(name: str) -> str:
    """Refuse names that cannot be one URL segment (the server checks the rest)."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise InvalidRequest(f"invalid dataset name {name!r}: use letters, digits, '-', '_' or '.', without '/'",
                             code="invalid", details={"name": "invalid"})
    return name


def _base(team: str, name: str) -> str:
    return f"/teams/{quote(team, safe='')}/datasets/{quote(_check_name(name), safe='')}"


def _ref(version: Any) -> str:
    if isinstance(version, DatasetVersion):
        return str(version.number)
    return "latest" if version is None else str(version)


class DatasetVersion:
    """One immutable version of a dataset: its metadata, files, stats and preview."""

    def __init__(self, team: str, name: str, data: dict[str, Any]):
        self.team, self.name, self.data = team, name, data
        self.number: int = data["number"]
        self.kind: str | None = data.get("kind")
        self.format: str | None = data.get("format")
        self.files: list[dict[str, Any]] = data.get("files", [])
        self.stats: dict[str, Any] = data.get("stats") or {}
        self.schema = data.get("schema")
        self.label_column: str | None = data.get("label_column")
        self.text_column: str | None = data.get("text_column")
        self.tags: list[str] = builtins.list(data.get("tags") or [])
        self.parent: int | None = data.get("parent")
        self.origin: dict[str, Any] = data.get("origin") or {}
        self.message: str = data.get("message") or ""
        self.row_count: int | None = data.get("row_count")
        self.split_summary: dict[str, Any] | None = data.get("splits")  # counts per split, or None
        self._splits: dict[str, list] | None = None

    def __repr__(self) -> str:
        return f"<DatasetVersion {self.team}/{self.name}:{self.number} {self.kind} files={len(self.files)}>"

    @property
    def _path(self) -> str:
        return f"{_base(self.team, self.name)}/versions/{self.number}"

    # -- files ----------------------------------------------------------------------------------

    def fetch(self, paths: Iterable[str] | None = None, *, cache_dir: str | os.PathLike | None = None,
              parallel: int = 8) -> dict[str, Path]:
        """Make sure these files (default: all) are in the local blob cache; return ``path → cached file``.

        Only files whose hash the cache lacks are requested, each once, and verified on arrival.
        """
        cache = Cache(cache_dir)
        wanted = set(paths) if paths is not None else None
        entries = [f for f in self.files if wanted is None or f["path"] in wanted]
        if wanted is not None and len(entries) != len(wanted):
            unknown = sorted(wanted - {f["path"] for f in entries})
            raise InvalidRequest(f"{self.name}:{self.number} has no file {unknown[0]!r}")
        todo: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if not cache.has_blob(entry["sha256"]):
                todo.setdefault(entry["sha256"], entry)
        if todo:
            clients = uploads.ThreadClients(sdk.client())

            def one(entry: dict[str, Any]) -> None:
                response = clients.get().request_raw("GET", f"{self._path}/files/{quote(entry['path'])}",
                                                     stream=True)
                with response:
                    cache.put_blob(entry["sha256"], response.iter_content(CHUNK))

            try:
                with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo)))) as pool:
                    builtins.list(pool.map(one, todo.values()))
            finally:
                clients.close()
        return {entry["path"]: cache.blob_path(entry["sha256"]) for entry in entries}

    def read(self, path: str, *, cache_dir: str | os.PathLike | None = None) -> bytes:
        """The bytes of one file of this version (through the local blob cache)."""
        return self.fetch([path], cache_dir=cache_dir)[path].read_bytes()

    def download(self, directory: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
        """Write every file of this version under ``directory`` (copies from the blob cache); return it."""
        root = Path(directory)
        resolved = root.resolve()
        targets = []
        for entry in self.files:
            target = root / entry["path"]
            if resolved not in target.resolve().parents:
                raise InvalidRequest(f"refusing to write outside {root}: {entry['path']!r}")
            targets.append((entry["path"], target))
        cached = self.fetch(cache_dir=cache_dir)
        for path, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached[path], target)
        return root

    # -- splits and tables ------------------------------------------------------------------------

    def splits(self) -> dict[str, list]:
        """The split assignment: ``{"train": [items], …}`` (file paths, or 0-based row numbers).

        Raises:
            NotFound: this version has no split.
        """
        if self._splits is None:
            self._splits = sdk.client().get(f"{self._path}/splits")["splits"]
        return self._splits

    def _split_items(self, split: str | None) -> list | None:
        if split is None:
            return None
        assignment = self.splits()
        if split not in assignment:
            raise InvalidRequest(f"{self.name}:{self.number} has no split {split!r} "
                                 f"(it has: {', '.join(assignment)})")
        return assignment[split]

    def to_pandas(self, split: str | None = None, *, cache_dir: str | os.PathLike | None = None):
        """Tabular and text versions as their rows; images and files versions as a table of files
        (path, label, size, sha256). With ``split``, only that split's rows or files (needs pandas)."""
        import pandas as pd

        items = self._split_items(split)
        if self.kind in ("images", "files") or (self.kind is None and len(self.files) != 1):
            frame = pd.DataFrame([{"path": f["path"], "label": f.get("label"), "size": f.get("size"),
                                   "sha256": f.get("sha256")} for f in self.files],
                                 columns=["path", "label", "size", "sha256"])
            if items is not None:
                keep = set(items)
                frame = frame[frame["path"].isin(keep)].reset_index(drop=True)
            return frame
        if len(self.files) != 1:
            raise InvalidRequest("to_pandas() reads tabular and text versions made of one file")
        frame = _read_table(self.fetch(cache_dir=cache_dir)[self.files[0]["path"]], self.format,
                            self.files[0]["path"])
        if items is not None:
            frame = frame.iloc[[int(i) for i in items]].reset_index(drop=True)
        return frame

    def torch(self, split: str | None = None, transform=None, target_transform=None,
              cache_dir: str | os.PathLike | None = None, **options: Any):
        """This version (or one split) as a ``torch.utils.data.Dataset`` over locally cached files.

        Images give ``(PIL image or transform(image), class index)`` with ``.classes`` sorted; tabular
        versions give ``(float32 tensor of the numeric non-label columns, label index or value)``;
        text versions give ``(text, label index)``. Needs torch (and Pillow for images).
        """
        from officina.sdk import torchdata

        return torchdata.make_dataset(self, split=split, transform=transform, target_transform=target_transform,
                                      cache_dir=cache_dir, **options)

    # -- new versions -----------------------------------------------------------------------------

    def split(self, fractions: Mapping[str, float] | Sequence[float] | None = None, *, seed: int = 0,
              stratify: bool = True, message: str = "", wait: bool = True, progress: bool = False):
        """Split this version into train/val/test (default 0.8/0.1/0.1); return the new version.

        ``fractions`` is a mapping of split names to fractions, or 2 or 3 numbers (train/test or
        train/val/test). With ``wait=False`` return the queued build instead.
        """
        if fractions is None:
            fractions = DEFAULT_FRACTIONS
        elif not isinstance(fractions, Mapping):
            values = builtins.list(fractions)
            names = {2: ("train", "test"), 3: ("train", "val", "test")}.get(len(values))
            if names is None:
                raise InvalidRequest("give fractions as a mapping, or 2 or 3 numbers (train/[val/]test)")
            fractions = dict(zip(names, values))
        body = {"fractions": dict(fractions), "seed": seed, "stratify": stratify}
        if message:
            body["message"] = message
        build = sdk.client().post(f"{self._path}/split", body)["build"]
        return self._finish(build, wait, progress)

    def derive(self, remove: Iterable[str] | None = None, relabel: Mapping[str, str] | None = None,
               filter: Iterable[Any] | None = None, label_column: str | None = None,  # noqa: A002
               message: str = "", *, wait: bool = True, progress: bool = False):
        """A new version from this one: files removed or relabeled (images, files), rows filtered
        (tabular, text; each condition a ``{"column","op","value"}`` dict or a ``(column, op, value)``
        tuple), or another label column. With ``wait=False`` return the queued build instead."""
        body: dict[str, Any] = {}
        if remove:
            body["remove"] = builtins.list(remove)
        if relabel:
            body["relabel"] = dict(relabel)
        if filter:
            body["filter"] = [_condition(c) for c in filter]
        if label_column:
            body["label_column"] = label_column
        if message:
            body["message"] = message
        build = sdk.client().post(f"{self._path}/derive", body)["build"]
        return self._finish(build, wait, progress)

    def _finish(self, build: dict[str, Any], wait: bool, progress: bool):
        if not wait:
            return build
        bar = uploads.Progress(f"{self.name}:", enabled=progress)
        done = uploads.wait(sdk.client(), build["id"], progress=bar)
        bar.finish(f"{self.name}: version {done['version']}")
        return get(self.name, done["version"], team=self.team)

    # -- tags, diff, lineage ----------------------------------------------------------------------

    def tag(self, tag: str) -> dict[str, Any]:
        """Point ``tag`` at this version (creating or moving it)."""
        answer = tag_version(self.name, tag, self.number, team=self.team)
        if tag not in self.tags:
            self.tags.append(tag)
        return answer

    def diff(self, other: "DatasetVersion | int | str") -> dict[str, Any]:
        """What changed from this version to ``other`` (a version, number or tag)."""
        return diff(self.name, self.number, other, team=self.team)

    def lineage(self) -> dict[str, Any]:
        """Who used this version (``used_by``), what it came from and what was derived from it."""
        return sdk.client().get(f"{self._path}/lineage")

    def record_use(self, consumer_kind: str, consumer_id: str, role: str = "") -> dict[str, Any]:
        """Record that a run, model version or dataset version used this version (idempotent)."""
        body = {"consumer_kind": consumer_kind, "consumer_id": str(consumer_id)}
        if role:
            body["role"] = role
        return sdk.client().post(f"{self._path}/lineage", body)["lineage"]


def _condition(condition: Any) -> dict[str, Any]:
    if isinstance(condition, Mapping):
        return dict(condition)
    values = builtins.list(condition)
    if len(values) == 2:
        return {"column": values[0], "op": values[1]}
    if len(values) == 3:
        return {"column": values[0], "op": values[1], "value": values[2]}
    raise InvalidRequest(f"a filter condition is a dict or (column, op[, value]), not {condition!r}")


def _read_table(path: Path, fmt: str | None, name: str):
    import pandas as pd

    suffix = (fmt or Path(name).suffix.lstrip(".")).lower()
    if suffix in ("parquet", "pq"):
        return pd.read_parquet(path)
    if suffix in ("jsonl", "ndjson", "json"):
        return pd.read_json(path, lines=True)
    return pd.read_csv(path)


# -- module functions -------------------------------------------------------------------------------

def upload(name: str, path: str | os.PathLike | None, *, team: str | None = None, kind: str | None = None,
           label_column: str | None = None, text_column: str | None = None, message: str = "",
           base: int | str | None = None, remove: Iterable[str] | None = None, progress: bool = False,
           parallel: int = 4, resume: bool = True, cache_dir: str | os.PathLike | None = None,
           stats: dict[str, Any] | None = None) -> DatasetVersion:
    """Upload a file or a folder as the next version of ``name``; return it.

    Files are hashed once (a local cache remembers unchanged files), only the bytes the server lacks
    are sent (``parallel`` at a time, big files in parts), and an interrupted upload resumes where
    it stopped when run again. With ``base``, the new version is that version's files, minus
    ``remove``, plus these. ``stats`` (a dict) is filled with what was hashed and sent.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OfficinaError: the server refused the upload or the build failed (with the server's message).
    """
    _check_name(name)
    team = _team(team)
    params: dict[str, Any] = {k: v for k, v in {"kind": kind, "label_column": label_column,
                                                  "text_column": text_column, "message": message}.items() if v}
    if base is not None:
        params["base"] = _ref(base)
    if remove:
        params["remove"] = builtins.list(remove)
    build = uploads.send(sdk.client(), team, name, _base(team, name), path, params=params, progress=progress,
                         parallel=parallel, resume=resume, cache=Cache(cache_dir), stats=stats)
    return get(name, build["version"], team=team)


def get(name: str, version: int | str | None = None, team: str | None = None) -> DatasetVersion:
    """A version by number or tag (default: ``latest``)."""
    team = _team(team)
    body = sdk.client().get(f"{_base(team, name)}/versions/{quote(_ref(version), safe='')}")
    return DatasetVersion(team, name, body["version"])


def info(name: str, team: str | None = None) -> dict[str, Any]:
    """A dataset with its versions (newest first) and tags."""
    return sdk.client().get(_base(_team(team), name))


def list(team: str | None = None) -> builtins.list[dict[str, Any]]:  # noqa: A001 - reads as sdk.datasets.list()
    """The datasets of a team."""
    return sdk.client().get(f"/teams/{quote(_team(team), safe='')}/datasets")["datasets"]


def diff(name: str, a: "DatasetVersion | int | str", b: "DatasetVersion | int | str",
         team: str | None = None) -> dict[str, Any]:
    """What changed from version ``a`` to version ``b`` (files, rows and stats)."""
    team = _team(team)
    return sdk.client().get(f"{_base(team, name)}/diff", params={"from": _ref(a), "to": _ref(b)})


def tag(name: str, tag: str, version: "DatasetVersion | int | str", team: str | None = None) -> dict[str, Any]:
    """Point ``tag`` at ``version`` (creating or moving it); ``latest`` moves by itself."""
    team = _team(team)
    return sdk.client().put(f"{_base(team, name)}/tags/{quote(tag, safe='')}", {"version": _ref(version)})


tag_version = tag  # DatasetVersion.tag shadows the name inside the class


def untag(name: str, tag: str, team: str | None = None) -> None:
    """Remove a user tag."""
    team = _team(team)
    sdk.client().delete(f"{_base(team, name)}/tags/{quote(tag, safe='')}")


def builds(name: str, team: str | None = None) -> builtins.list[dict[str, Any]]:
    """The most recent builds of a dataset, newest first."""
    return sdk.client().get(f"{_base(_team(team), name)}/builds")["builds"]


def build(build_id: str) -> dict[str, Any]:
    """One build (upload, derive or split) with its status and progress."""
    return sdk.client().get(uploads.build_path(build_id))["build"]
