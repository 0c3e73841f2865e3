"""Real data from scikit-learn (shipped with it, no download) as the uploads the datasets layer sees."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits, load_wine


def frame_with_label(bunch) -> pd.DataFrame:
    frame = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])
    frame["label"] = [str(bunch.target_names[t]) for t in bunch.target]
    return frame


@pytest.fixture(scope="session")
def breast_cancer_csv() -> bytes:
    return frame_with_label(load_breast_cancer()).to_csv(index=False).encode()


@pytest.fixture(scope="session")
def wine_csv() -> bytes:
    return frame_with_label(load_wine()).to_csv(index=False).encode()


def digit_png(pixels: np.ndarray) -> bytes:
    img = Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L").resize((32, 32), Image.NEAREST)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="session")
def digits_files() -> dict[str, tuple[str, bytes]]:
    """``{path: (label, png bytes)}`` for all 1797 digits, as ``<digit>/<index>.png``."""
    digits = load_digits()
    pairs = enumerate(zip(digits.images, digits.target))
    return {f"{t}/{i:04d}.png": (str(t), digit_png(img)) for i, (img, t) in pairs}


@pytest.fixture(scope="session")
def digits_zip(digits_files) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, (_label, data) in digits_files.items():
            zf.writestr(path, data)
    return out.getvalue()
