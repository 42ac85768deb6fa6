"""Latent statistics of a trained model: the space the Explore tab moves through.

Computed from the posterior means of a dataset's clips and saved beside the checkpoint
(``latents.safetensors``), so exploration works without the dataset: mean and spread, principal
directions with the spread along each, per-label means, and a sample of codes for the 2-D map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .model import VAE

MAX_MAP_POINTS = 3000
MAX_SLIDERS = 6  # a handful: more sliders are hard to use and matter little
SLIDER_COVERAGE = 0.8  # sliders until this share of the variance is covered (capped at MAX_SLIDERS)


@dataclass
class LatentStats:
    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (K, D) principal directions, unit length, by variance
    component_sd: torch.Tensor  # (K,) standard deviation of the codes along each direction
    explained: torch.Tensor  # (K,) fraction of variance along each direction
    label_names: list[str]
    label_means: torch.Tensor  # (L, D)
    codes: torch.Tensor  # (N, D) posterior means of (a sample of) the clips
    code_labels: list[str | None]
    code_names: list[str]

    def n_sliders(self, coverage: float = SLIDER_COVERAGE, cap: int = MAX_SLIDERS) -> int:
        """How many principal directions cover ``coverage`` of the variance (at most ``cap``)."""
        cum = torch.cumsum(self.explained, 0)
        return int(min(cap, len(cum), int((cum < coverage).sum()) + 1))

    def project(self, z: torch.Tensor, k: int = 2) -> torch.Tensor:
        """Coordinates (..., k) of codes (..., D) on the first k principal directions."""
        return (z - self.mean) @ self.components[:k].T


def encode_indices(model: VAE, specs: np.ndarray, indices: list[int], batch: int = 128) -> torch.Tensor:
    """Posterior means (N, D) of the spectrograms ``specs[indices]`` ((N, F, T) in [0, 1])."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(indices), batch):
            x = torch.from_numpy(np.asarray(specs[indices[s:s + batch]])).unsqueeze(1).to(device)
            out.append(model.encode(x)[0].float().cpu())
    return torch.cat(out)


def compute_latent_stats(model: VAE, store, indices: list[int]) -> LatentStats:
    """Statistics of the codes of ``store`` clips ``indices`` (a preprocessing.Store)."""
    if len(indices) > MAX_MAP_POINTS:
        indices = sorted(np.random.default_rng(0).choice(indices, MAX_MAP_POINTS, replace=False).tolist())
    codes = encode_indices(model, store.specs, indices)  # (N, D)
    return stats_from_codes(codes, [store.clips[i]["label"] for i in indices], [store.clip_name(i) for i in indices])


def stats_from_codes(codes: torch.Tensor, labels: list[str | None], names: list[str]) -> LatentStats:
    mean = codes.mean(0)
    centred = codes - mean
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)  # vt: (K, D)
    var = s.pow(2) / max(1, len(codes) - 1)
    label_names = sorted({lab for lab in labels if lab is not None})
    label_means = torch.stack([codes[[i for i, lab in enumerate(labels) if lab == n]].mean(0) for n in label_names]) \
        if label_names else torch.zeros(0, codes.shape[1])
    return LatentStats(mean, vt, var.sqrt(), var / var.sum().clamp_min(1e-12), label_names, label_means,
                       codes, list(labels), list(names))


def save_latent_stats(directory: str | Path, stats: LatentStats) -> Path:
    from .checkpoint import atomic_write

    path = Path(directory) / "latents.safetensors"
    tensors = {k: getattr(stats, k).contiguous() for k in
               ("mean", "components", "component_sd", "explained", "label_means", "codes")}
    metadata = {"label_names": json.dumps(stats.label_names), "code_labels": json.dumps(stats.code_labels),
                "code_names": json.dumps(stats.code_names)}
    atomic_write(path, lambda p: save_file(tensors, str(p), metadata=metadata))
    return path


def load_latent_stats(directory: str | Path) -> LatentStats | None:
    """The saved statistics, or None when the checkpoint has none."""
    from safetensors import safe_open

    path = Path(directory) / "latents.safetensors"
    if not path.is_file():
        return None
    t = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        md = f.metadata() or {}
    return LatentStats(t["mean"], t["components"], t["component_sd"], t["explained"],
                       json.loads(md.get("label_names", "[]")), t["label_means"], t["codes"],
                       json.loads(md.get("code_labels", "[]")), json.loads(md.get("code_names", "[]")))
