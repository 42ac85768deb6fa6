"""Label conditioning (issue #14): a model's label vocabulary and the label indices it takes.

A conditional model records its vocabulary as ``ModelConfig.labels`` (the names, in the order of its
embedding rows); its encoder and decoder take labels as (B,) long indices into it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from preprocessing.errors import InputError

CONDITIONS = ("label",)  # what a model can be conditioned on: the store's labels (digit, genre folder)


def _known(vocabulary: Sequence[str]) -> str:
    shown = ", ".join(vocabulary[:20]) + (f", ... ({len(vocabulary)} in all)" if len(vocabulary) > 20 else "")
    return shown


def label_index(vocabulary: Sequence[str], name: str | int | None) -> int:
    """The embedding row of label ``name``; :class:`InputError` naming the known labels otherwise."""
    if not vocabulary:
        raise InputError(f"this model is not conditioned on labels (it was trained without --condition label), "
                         f"so it takes no label ({name!r} given)")
    key = str(name) if name is not None else ""
    if key not in vocabulary:
        raise InputError(f"unknown label {key!r}; this model knows {_known(vocabulary)}")
    return list(vocabulary).index(key)


def label_indices(vocabulary: Sequence[str], names: Sequence[str | None]) -> np.ndarray:
    """Embedding rows (N,) int64 of clip labels ``names``; :class:`InputError` for a missing or unknown one."""
    rows = {name: i for i, name in enumerate(vocabulary)}
    missing = sorted({"(unlabelled)" if n is None else str(n) for n in names if n not in rows})
    if missing:
        raise InputError(f"{len(missing)} label(s) not in the model's vocabulary ({', '.join(missing[:5])}); "
                         f"it knows {_known(vocabulary)}")
    return np.fromiter((rows[n] for n in names), dtype=np.int64, count=len(names))


def label_tensor(vocabulary: Sequence[str], name: str | int | None, n: int) -> torch.Tensor | None:
    """Labels (n,) long all equal to ``name``'s row, or None when ``name`` is None (no label)."""
    return None if name is None else torch.full((n,), label_index(vocabulary, name), dtype=torch.long)
