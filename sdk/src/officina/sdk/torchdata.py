"""Dataset versions as ``torch.utils.data.Dataset`` objects, reading locally cached files only.

Imported by ``DatasetVersion.torch()`` alone, so the SDK installs and imports without torch. Every
file is fetched into the blob cache when the dataset is made; items are then read from local disk,
so a DataLoader's workers make no HTTP requests and a second dataset over the same version none.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from officina.sdk.errors import InvalidRequest

if TYPE_CHECKING:
    from officina.sdk.datasets import DatasetVersion

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def make_dataset(version: DatasetVersion, *, split: str | None = None, transform: Callable | None = None,
                 target_transform: Callable | None = None, cache_dir: str | os.PathLike | None = None,
                 image_mode: str | None = "RGB") -> Dataset:
    """The right dataset class for the version's kind (see ``DatasetVersion.torch``)."""
    if version.kind == "images":
        return ImageDataset(version, split, transform, target_transform, cache_dir, image_mode=image_mode)
    if version.kind == "tabular":
        return TabularDataset(version, split, transform, target_transform, cache_dir)
    if version.kind == "text":
        return TextDataset(version, split, transform, target_transform, cache_dir)
    if version.kind == "files":
        return FileDataset(version, split, transform, target_transform, cache_dir)
    raise InvalidRequest(f"{version.name}:{version.number} is a {version.kind!r} version; torch() reads "
                         "images, tabular, text and files versions")


class _Base(Dataset):
    classes: list
    targets: list

    def __init__(self, version: DatasetVersion, split: str | None, transform: Callable | None,
                 target_transform: Callable | None):
        self.dataset, self.version, self.split = version.name, version.number, split
        self.transform, self.target_transform = transform, target_transform

    def _target(self, target: Any) -> Any:
        return self.target_transform(target) if self.target_transform else target

    def __repr__(self) -> str:
        where = f" split={self.split}" if self.split else ""
        return f"<{type(self).__name__} {self.dataset}:{self.version}{where} items={len(self)}>"


class _FileBacked(_Base):
    """Items are files of the version with their labels; ``.classes`` are the sorted labels."""

    def __init__(self, version, split, transform, target_transform, cache_dir, *, keep: Callable[[str], bool]):
        super().__init__(version, split, transform, target_transform)
        items = version._split_items(split)
        by_path = {f["path"]: f for f in version.files}
        if items is None:
            entries = [f for f in version.files if keep(f["path"])]
        else:
            entries = [by_path[p] for p in items if p in by_path and keep(p)]
        self.classes = sorted({f["label"] for f in version.files if f.get("label") is not None and keep(f["path"])})
        self.class_to_idx = {label: index for index, label in enumerate(self.classes)}
        local = version.fetch([e["path"] for e in entries], cache_dir=cache_dir)
        self.paths = [e["path"] for e in entries]
        self.targets = [self.class_to_idx.get(e.get("label"), -1) for e in entries]
        self.samples = [(str(local[e["path"]]), target) for e, target in zip(entries, self.targets)]

    def __len__(self) -> int:
        return len(self.samples)


class ImageDataset(_FileBacked):
    """``(PIL image or transform(image), class index)``; images are converted to ``image_mode``."""

    def __init__(self, version, split, transform, target_transform, cache_dir, *, image_mode: str | None = "RGB"):
        super().__init__(version, split, transform, target_transform, cache_dir,
                         keep=lambda path: path.lower().endswith(IMAGE_SUFFIXES))
        self.image_mode = image_mode

    def __getitem__(self, index: int):
        from PIL import Image

        file, target = self.samples[index]
        with Image.open(file) as img:
            image = img.convert(self.image_mode) if self.image_mode else img.copy()
        if self.transform:
            image = self.transform(image)
        return image, self._target(target)


class FileDataset(_FileBacked):
    """``(path of the cached file or transform(path), class index)`` for a files version."""

    def __init__(self, version, split, transform, target_transform, cache_dir):
        super().__init__(version, split, transform, target_transform, cache_dir, keep=lambda path: True)

    def __getitem__(self, index: int):
        file, target = self.samples[index]
        return (self.transform(file) if self.transform else file), self._target(target)


def _frame_and_rows(version: DatasetVersion, split: str | None, cache_dir):
    whole = version.to_pandas(cache_dir=cache_dir)
    items = version._split_items(split)
    frame = whole if items is None else whole.iloc[[int(i) for i in items]].reset_index(drop=True)
    return whole, frame


def _labels(whole, frame, column: str | None) -> tuple[list, list, bool]:
    """``(classes, targets, is_regression)``: class indices, or float values for a continuous label."""
    import pandas as pd

    if not column:
        return [], [], False
    if column not in whole.columns:
        raise InvalidRequest(f"label column {column!r} is not in the table")
    values = whole[column]
    if pd.api.types.is_float_dtype(values) and not np.all(np.mod(values.dropna().to_numpy(), 1) == 0):
        return [], frame[column].astype("float32").tolist(), True
    classes = sorted(values.dropna().unique().tolist())
    index = {label: i for i, label in enumerate(classes)}
    return classes, [index.get(v, -1) for v in frame[column].tolist()], False


class TabularDataset(_Base):
    """``(float32 tensor of the numeric non-label columns, class index or float value)``; without a
    label column, the feature tensor alone."""

    def __init__(self, version, split, transform, target_transform, cache_dir):
        import pandas as pd

        super().__init__(version, split, transform, target_transform)
        whole, frame = _frame_and_rows(version, split, cache_dir)
        self.label_column = version.label_column
        self.features = [c for c in whole.columns if c != self.label_column and
                         (pd.api.types.is_numeric_dtype(whole[c]) or pd.api.types.is_bool_dtype(whole[c]))]
        self.data = torch.from_numpy(np.ascontiguousarray(frame[self.features].to_numpy(dtype=np.float32,
                                                                                        na_value=np.nan)))
        self.classes, self.targets, self.regression = _labels(whole, frame, self.label_column)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index: int):
        x = self.data[index]
        if self.transform:
            x = self.transform(x)
        if not self.label_column:
            return x
        target = self.targets[index]
        if self.regression:
            target = torch.tensor(target, dtype=torch.float32)
        return x, self._target(target)


class TextDataset(_Base):
    """``(text or transform(text), class index)``; ``.features`` has the numeric columns as in tabular."""

    def __init__(self, version, split, transform, target_transform, cache_dir):
        super().__init__(version, split, transform, target_transform)
        whole, frame = _frame_and_rows(version, split, cache_dir)
        self.text_column, self.label_column = version.text_column, version.label_column
        if not self.text_column or self.text_column not in whole.columns:
            raise InvalidRequest(f"{version.name}:{version.number} has no text column")
        self.texts = frame[self.text_column].fillna("").astype(str).tolist()
        self.classes, self.targets, self.regression = _labels(whole, frame, self.label_column)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int):
        text = self.texts[index]
        if self.transform:
            text = self.transform(text)
        if not self.label_column:
            return text
        target = self.targets[index]
        if self.regression:
            target = torch.tensor(target, dtype=torch.float32)
        return text, self._target(target)
