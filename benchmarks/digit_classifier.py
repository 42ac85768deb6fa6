"""A small CNN label classifier on a store's spectrograms: the judge of conditional sampling (issue #14).

Separate from the VAE: trained on the store's training split only, its accuracy measured on the test
split (FSDD: takes 0-4 of every speaker). Input (B, 1, F, T) normalised spectrograms in [0, 1], as the
store holds them and a VAE decodes them; output (B, L) logits over the store's labels, sorted.

Cached under a folder (``classifier.safetensors`` + ``classifier.json``) keyed by the store's fingerprint
and the config, so the benchmark trains it once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from preprocessing.errors import UserError
from preprocessing.store import Store

MAX_CLIPS = 200_000  # clips a classifier trains on (a bound on time and memory)


class ClassifierError(UserError):
    """The store cannot train a classifier (no labels, too few clips), or a cached one does not fit."""


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training of the label classifier."""

    channels: tuple[int, ...] = (16, 32, 64, 128)  # conv filters per stage; each stage halves F and T
    pool: int = 2  # the input is average-pooled by this first (128 x 96 -> 64 x 48): 4x less work
    grid: tuple[int, int] = (4, 3)  # (F, T) cells the last feature map is averaged to before the linear layer
    dropout: float = 0.3
    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    shift: int = 8  # training augmentation: random time shift of up to this many frames (each way)
    noise: float = 0.02  # training augmentation: Gaussian noise SD on the [0, 1] spectrogram
    seed: int = 0

    def validate(self) -> ClassifierConfig:
        if not self.channels or len(self.channels) > 6 or not all(1 <= c <= 512 for c in self.channels):
            raise ClassifierError("classifier channels: 1 to 6 stages of 1 to 512 filters")
        if not (1 <= self.epochs <= 1000 and 1 <= self.batch_size <= 4096 and self.lr > 0 and 0 <= self.shift <= 64
                and 1 <= self.pool <= 8 and all(1 <= g <= 16 for g in self.grid) and 0 <= self.dropout < 1):
            raise ClassifierError(f"bad classifier training settings: {self}")
        return self


class DigitClassifier(nn.Module):
    """(B, 1, F, T) spectrograms -> (B, L) logits: an average pool, conv -> BN -> ReLU -> 2x2 max-pool stages,
    an average to a coarse (F, T) grid (where in time and frequency still counts: a digit is a sequence of
    sounds), dropout and a linear layer."""

    def __init__(self, labels: tuple[str, ...], cfg: ClassifierConfig):
        super().__init__()
        self.labels, self.cfg = tuple(labels), cfg.validate()
        layers: list[nn.Module] = [nn.AvgPool2d(cfg.pool)] if cfg.pool > 1 else []
        c_in = 1
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(cfg.grid))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(c_in * math.prod(cfg.grid),
                                                                                    len(labels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, gF, gT) -> (B, L)

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray, batch: int = 256) -> np.ndarray:
        """Spectrograms (N, F, T) or (N, 1, F, T) -> predicted label rows (N,) int64."""
        self.eval()
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        x = x.reshape(len(x), 1, *x.shape[-2:])  # (N, 1, F, T)
        return torch.cat([self(x[s:s + batch]).argmax(1) for s in range(0, len(x), batch)]).numpy()


def _split(store: Store, split: str, labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(spectrograms (N, F, T) float32, label rows (N,) int64) of the labelled clips of one split."""
    rows = {name: i for i, name in enumerate(labels)}
    idx = [i for i in store.indices(split) if store.clips[i]["label"] in rows][:MAX_CLIPS]
    y = np.array([rows[store.clips[i]["label"]] for i in idx], dtype=np.int64)
    return np.asarray(store.rows[idx], dtype=np.float32), y


def _augment(x: torch.Tensor, cfg: ClassifierConfig, g: torch.Generator) -> torch.Tensor:
    """x (B, 1, F, T): each clip shifted in time by up to ``cfg.shift`` frames (zeros come in), plus noise."""
    if cfg.shift:
        shifts = torch.randint(-cfg.shift, cfg.shift + 1, (len(x),), generator=g)
        x = torch.stack([torch.roll(c, int(s), dims=-1) for c, s in zip(x, shifts)])
    return (x + cfg.noise * torch.randn(x.shape, generator=g)).clamp(0, 1)


def train_classifier(store: Store, cfg: ClassifierConfig = ClassifierConfig(),
                     log: Callable[[str], None] | None = None) -> DigitClassifier:
    """A classifier of ``store``'s labels trained on its training split (CPU)."""
    labels = tuple(store.labels())
    if len(labels) < 2:
        raise ClassifierError(f"store {store.path} has {len(labels)} label(s); a classifier needs at least 2")
    x, y = _split(store, "train", labels)
    if len(x) < len(labels):
        raise ClassifierError(f"store {store.path} has {len(x)} labelled training clips, too few to train on")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = DigitClassifier(labels, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(x) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps)
    xt, yt = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)  # (N, 1, F, T), (N,)
    for epoch in range(cfg.epochs):
        model.train()
        order, total = torch.randperm(len(xt), generator=g), 0.0
        for s in range(0, len(xt), cfg.batch_size):
            b = order[s:s + cfg.batch_size]
            loss = nn.functional.cross_entropy(model(_augment(xt[b], cfg, g)), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        if log:
            log(f"classifier epoch {epoch + 1}/{cfg.epochs}: loss {total / len(xt):.4f}")
    return model.eval()


def per_label_accuracy(labels: tuple[str, ...], y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Share of the clips of each label (rows ``y``) predicted as it (None for a label without clips)."""
    return {name: (float((pred[y == i] == i).mean()) if (y == i).any() else None) for i, name in enumerate(labels)}


def held_out_accuracy(model: DigitClassifier, store: Store) -> dict[str, Any]:
    """Accuracy on the store's test split: overall, per label, and the number of clips."""
    x, y = _split(store, "test", model.labels)
    if not len(x):
        raise ClassifierError(f"store {store.path} has no labelled test clips to measure the classifier on")
    pred = model.predict(x)
    return {"accuracy": float((pred == y).mean()), "per_label": per_label_accuracy(model.labels, y, pred),
            "n_clips": len(y)}


def _key(store: Store, cfg: ClassifierConfig) -> dict[str, Any]:
    return {"store_fingerprint": store.meta.get("fingerprint"), "shape": list(store.config.shape),
            "n_clips": len(store), "config": asdict(cfg)}


def load_or_train(store: Store, cache: str | Path | None, cfg: ClassifierConfig = ClassifierConfig(),
                  log: Callable[[str], None] | None = None) -> tuple[DigitClassifier, bool]:
    """(classifier, whether it came from ``cache``): the cached one when it was trained on this store with
    this config, else a new one (saved there)."""
    key = json.loads(json.dumps(_key(store, cfg)))  # tuples as lists, as read back
    folder = Path(cache) if cache is not None else None
    if folder is not None and (folder / "classifier.json").is_file():
        meta = json.loads((folder / "classifier.json").read_text())
        if meta.get("key") == key:
            model = DigitClassifier(tuple(meta["labels"]), cfg)
            model.load_state_dict(load_file(str(folder / "classifier.safetensors")))
            return model.eval(), True
    model = train_classifier(store, cfg, log)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "classifier.safetensors"))
        (folder / "classifier.json").write_text(json.dumps({"key": key, "labels": list(model.labels)}, indent=2))
    return model, False
