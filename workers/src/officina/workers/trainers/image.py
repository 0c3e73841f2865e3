"""Built-in image classifier: a small CNN over an images dataset version.

Run as a job with ``trainer: "image"`` (``python -m officina.workers.trainers.image``). The model
takes float pixels in [0, 1] shaped ``(N, C, H, W)`` and normalizes them itself, so the logged
model needs no preprocessing beyond resizing to the size in the summary.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from officina.workers.trainers import job
from officina.workers.trainers.common import COMMON_PARAMS, Tracker, TrainerError, make_split, resolve_params, setup
from officina.workers.trainers.loop import Problem, fit

PARAMS = {**COMMON_PARAMS, "epochs": (int, 20, 1), "lr": (float, 3e-3, 1e-9), "hidden": (int, 32, 1),
          "weight_decay": (float, 5e-4, 0.0), "image_size": (int, 64, 4), "augment": (bool, True, None)}
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics of the training images."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("std", std.reshape(1, -1, 1, 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def build_cnn(channels: int, size: int, classes: int, width: int, mean: torch.Tensor,
              std: torch.Tensor) -> nn.Sequential:
    """Two 3×3 convolutions per stage, halving the resolution (and doubling the width, up to 8×``width``)
    until it is 4 or less, then global average pooling and a linear classifier."""
    layers: list[nn.Module] = [Normalize(mean, std), *_conv(channels, width), *_conv(width, width)]
    c, side = width, size
    while side > 4:
        wider = min(c * 2, width * 8)
        layers += [nn.MaxPool2d(2), *_conv(c, wider), *_conv(wider, wider)]
        c, side = wider, side // 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(c, classes)]
    return nn.Sequential(*layers)


def shift_images(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Each image moved by a random whole number of pixels (up to ``max_shift`` each way), edges repeated."""
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), device=x.device).float()
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = 2 * shifts[:, 0] / w, 2 * shifts[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _to_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise TrainerError(f"images must be shaped (N, H, W) or (N, H, W, C) with C 1 or 3, not {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = x.float()
    return x.permute(0, 3, 1, 2).contiguous()


def train_image(images: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray, params: Mapping[str, Any] | None,
                tracker: Tracker, *, classes: Sequence[Any] | None = None,
                split: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Train the CNN on ``images`` (uint8 0–255 or floats in [0, 1], ``(N, H, W[, C])``) with class indices
    ``labels``; ``split`` gives recorded train/val/test indices, else a seeded stratified 80/10/10 split.

    Raises:
        TrainerError: bad params, shapes or labels.
    """
    params = resolve_params(params, PARAMS)
    device = setup(params)
    x = _to_nchw(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(y) != len(x) or len(y) < 3:
        raise TrainerError(f"need at least 3 images with one label each (got {len(x)} images, {len(y)} labels)")
    if int(y.min()) < 0:
        raise TrainerError("labels must be class indices (0, 1, …)")
    classes = list(classes) if classes is not None else list(range(int(y.max()) + 1))
    parts = make_split(len(y), params["seed"], strata=y.numpy(), recorded=split)
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    train_pixels = x[torch.from_numpy(parts.train)].float().div(scale)
    mean = train_pixels.mean(dim=(0, 2, 3))
    std = train_pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    channels, height, width = x.shape[1:]
    model = build_cnn(channels, min(height, width), len(classes), params["hidden"], mean, std)

    def prepare(batch: torch.Tensor) -> torch.Tensor:
        return batch.float().div(scale)

    max_shift = max(1, min(height, width) // 8)
    meta = {"trainer": "image", "channels": int(channels), "height": int(height), "width": int(width),
            "hidden": params["hidden"], "classes": [c if isinstance(c, (int, str)) else str(c) for c in classes]}
    problem = Problem(model=model, task="classification", meta=meta, prepare=prepare,
                      augment=(lambda b: shift_images(b, max_shift)) if params["augment"] else None,
                      inputs={k: x[torch.from_numpy(getattr(parts, k))] for k in ("train", "val", "test")},
                      targets={k: y[torch.from_numpy(getattr(parts, k))] for k in ("train", "val", "test")})
    return fit(problem, params, tracker, device)


def load_images(version: Any, image_size: int) -> tuple[np.ndarray, np.ndarray, list, dict[str, list[int]] | None]:
    """``(uint8 images (N, H, W[, C]), class indices, classes, recorded split or None)`` of an images version.

    Images keep their size when they all share one no larger than ``image_size``; otherwise they are
    resized to ``image_size`` square. They are grayscale when every image is, else RGB.
    """
    if version.kind != "images":
        raise TrainerError(f"the image trainer reads images versions; {version.name}:{version.number} "
                           f"is {version.kind!r}")
    dataset = version.torch(image_mode=None)
    items = [(i, dataset[i][0]) for i, target in enumerate(dataset.targets) if target >= 0]
    if not items:
        raise TrainerError(f"{version.name}:{version.number} has no labeled images")
    mode = "L" if all(img.mode in GRAYSCALE_MODES for _, img in items) else "RGB"
    sizes = {img.size for _, img in items}
    size = next(iter(sizes)) if len(sizes) == 1 and max(next(iter(sizes))) <= image_size else None
    arrays = []
    for _, img in items:
        img = img.convert(mode)
        arrays.append(np.asarray(img if size else img.resize((image_size, image_size))))
    keep = [i for i, _ in items]
    recorded = None
    if version.split_summary:
        position = {dataset.paths[i]: new for new, i in enumerate(keep)}
        recorded = {name: [position[p] for p in paths if p in position] for name, paths in version.splits().items()}
    return np.stack(arrays), np.asarray([dataset.targets[i] for i in keep]), list(dataset.classes), recorded


def train_version(version: Any, params: Mapping[str, Any], tracker: Tracker) -> dict[str, Any]:
    """Load an images version and train on it (the job's entrypoint body)."""
    image_size = resolve_params(params, PARAMS)["image_size"]
    images, labels, classes, recorded = load_images(version, image_size)
    return train_image(images, labels, params, tracker, classes=classes, split=recorded)


def main() -> None:
    """``python -m officina.workers.trainers.image`` inside a job."""
    job.main("image", train_version)


if __name__ == "__main__":
    main()
