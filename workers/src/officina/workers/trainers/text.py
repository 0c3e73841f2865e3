"""Built-in text classifier: the mean of learned word embeddings (an ``EmbeddingBag``) and a linear layer.

Run as a job with ``trainer: "text"`` (``python -m officina.workers.trainers.text``). The vocabulary
is built from the training texts only: lowercased words (and word pairs with ``ngrams: 2``), the
``max_vocab`` most frequent. The logged model takes token ids shaped ``(N, L)``, 0 for padding and
unknown words; the summary's ``model.vocabulary`` lists the tokens of ids 1, 2, ….
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from officina.workers.trainers import job
from officina.workers.trainers.common import (COMMON_PARAMS, Tracker, TrainerError, kept_rows_split, make_split,
                                              resolve_params, setup)
from officina.workers.trainers.loop import Problem, fit

PARAMS = {**COMMON_PARAMS, "epochs": (int, 15, 1), "lr": (float, 5e-3, 1e-9), "hidden": (int, 64, 1),
          "max_vocab": (int, 20000, 1), "min_freq": (int, 1, 1), "max_len": (int, 256, 1), "ngrams": (int, 1, 1),
          "text_column": (str, None, None)}
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str, ngrams: int = 1) -> list[str]:
    """Lowercased words, then (with ``ngrams`` ≥ 2) runs of up to ``ngrams`` words joined by spaces."""
    words = WORD.findall(text.lower())
    tokens = list(words)
    for n in range(2, ngrams + 1):
        tokens += [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return tokens


class Vocabulary:
    """Token → id (from 1; 0 is padding and every unknown token)."""

    def __init__(self, tokens: Sequence[str], ngrams: int = 1):
        self.tokens, self.ngrams = list(tokens), ngrams
        self.ids = {token: i + 1 for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], max_size: int, min_freq: int = 1, ngrams: int = 1) -> Vocabulary:
        """The ``max_size`` most frequent tokens seen at least ``min_freq`` times (ties by token)."""
        counts = Counter(token for text in texts for token in tokenize(text, ngrams))
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(ranked[:max_size], ngrams)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Iterable[str], max_len: int) -> torch.Tensor:
        """Known token ids of each text (the first ``max_len``), padded with 0 to the longest: ``(N, L)``."""
        rows = [[i for i in (self.ids.get(t, 0) for t in tokenize(text, self.ngrams)) if i][:max_len]
                for text in texts]
        out = torch.zeros(len(rows), max(1, max((len(r) for r in rows), default=1)), dtype=torch.int64)
        for n, row in enumerate(rows):
            out[n, :len(row)] = torch.tensor(row, dtype=torch.int64)
        return out


class BagClassifier(nn.Module):
    """Logits from the mean embedding of a text's token ids (padding excluded)."""

    def __init__(self, vocab_size: int, dim: int, classes: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size + 1, dim, mode="mean", padding_idx=0)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


def train_text(texts: Sequence[str], labels: Sequence[Any] | np.ndarray, params: Mapping[str, Any] | None,
               tracker: Tracker, *, split: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Train the classifier on ``texts`` and ``labels`` (any values: the sorted distinct ones are the
    classes); ``split`` gives recorded train/val/test indices, else a seeded stratified 80/10/10 split.

    Raises:
        TrainerError: bad params or inputs, or no token in the training texts.
    """
    params = resolve_params(params, PARAMS)
    device = setup(params)
    texts = ["" if t is None else str(t) for t in texts]
    raw = np.asarray(labels)
    if len(texts) != len(raw) or len(texts) < 3:
        raise TrainerError(f"need at least 3 texts with one label each (got {len(texts)} texts, {len(raw)} labels)")
    classes, codes = np.unique(raw, return_inverse=True)
    codes = codes.reshape(-1)
    parts = make_split(len(texts), params["seed"], strata=codes, recorded=split)
    vocab = Vocabulary.build((texts[i] for i in parts.train), params["max_vocab"], params["min_freq"],
                             params["ngrams"])
    if not len(vocab):
        raise TrainerError("the training texts have no words")
    ids = vocab.encode(texts, params["max_len"])
    y = torch.as_tensor(codes, dtype=torch.int64)
    model = BagClassifier(len(vocab), params["hidden"], len(classes))
    meta = {"trainer": "text", "hidden": params["hidden"], "ngrams": params["ngrams"],
            "classes": [c.item() if isinstance(c, np.generic) else c for c in classes], "vocabulary": vocab.tokens}
    problem = Problem(model=model, task="classification", meta=meta,
                      inputs={k: ids[torch.from_numpy(getattr(parts, k))] for k in ("train", "val", "test")},
                      targets={k: y[torch.from_numpy(getattr(parts, k))] for k in ("train", "val", "test")})
    return fit(problem, params, tracker, device)


def load_texts(version: Any, text_column: str | None, label_column: str | None
               ) -> tuple[list[str], np.ndarray, dict[str, list[int]] | None]:
    """``(texts, labels, recorded split or None)`` of a text (or tabular) version; rows without a label
    are left out and the split's row numbers follow.

    Raises:
        TrainerError: no text or label column.
    """
    frame = version.to_pandas()
    text = text_column or getattr(version, "text_column", None)
    label = label_column or version.label_column
    for role, column in (("text", text), ("label", label)):
        if not column or column not in frame.columns:
            raise TrainerError(f"name the {role} column with the {role}_column param "
                               f"(columns: {', '.join(map(str, frame.columns))})")
    keep = frame[label].notna().to_numpy()
    rows = frame[keep]
    recorded = kept_rows_split(version.splits(), keep) if version.split_summary else None
    return rows[text].fillna("").astype(str).tolist(), rows[label].astype(str).to_numpy(), recorded


def train_version(version: Any, params: Mapping[str, Any], tracker: Tracker) -> dict[str, Any]:
    """Load a text version and train on it (the job's entrypoint body)."""
    resolved = resolve_params(params, PARAMS)
    texts, labels, recorded = load_texts(version, resolved["text_column"], resolved["label_column"])
    return train_text(texts, labels, params, tracker, split=recorded)


def main() -> None:
    """``python -m officina.workers.trainers.text`` inside a job."""
    job.main("text", train_version)


if __name__ == "__main__":
    main()
