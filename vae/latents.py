"""Latent statistics of a trained model: the space the Explore tab moves through.

Computed from the posterior means of a dataset's clips and saved beside the checkpoint
(``latents.safetensors``), so exploration works without the dataset: mean and spread, principal
directions with the spread along each, per-label means, and a sample of codes for the 2-D map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from preprocessing.errors import InputError

from .model import VAE

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

MAX_MAP_POINTS = 3000
MAX_SLIDERS = 6  # a handful: more sliders are hard to use and matter little
SLIDER_COVERAGE = 0.8  # sliders until this share of the variance is covered (capped at MAX_SLIDERS)
RANGE_SD = 3.0  # slider range, +/- this many standard deviations


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

    def covered(self, n: int) -> float:
        """Share of the codes' variance along the first ``n`` directions."""
        return float(self.explained[:n].sum())


def prior_stats(latent_dim: int, k: int = MAX_SLIDERS) -> LatentStats:
    """Stand-in statistics for a checkpoint without ``latents.safetensors``: the prior's axes."""
    k = min(k, latent_dim)
    return LatentStats(
        mean=torch.zeros(latent_dim), components=torch.eye(latent_dim)[:k], component_sd=torch.ones(k),
        explained=torch.full((k,), 1.0 / latent_dim), label_names=[], label_means=torch.zeros(0, latent_dim),
        codes=torch.zeros(0, latent_dim), code_labels=[], code_names=[],
    )


def n_sliders(stats: LatentStats, coverage: float = SLIDER_COVERAGE, cap: int = MAX_SLIDERS) -> int:
    """How many sliders a model gets: enough directions to cover ``coverage`` of the variance."""
    return min(stats.n_sliders(coverage, cap), len(stats.components))


def to_sliders(stats: LatentStats, z: torch.Tensor, n: int, range_sd: float = RANGE_SD,
               step: float | None = None) -> tuple[list[float], torch.Tensor]:
    """Code (D,) -> (slider values in SD for the first ``n`` directions, residual (D,)).

    The residual is the part of ``z`` the slider values do not say, so starting from a clip keeps
    everything about it the sliders do not cover: ``from_sliders(values, residual)`` gives ``z`` back.
    With ``step``, values are rounded to multiples of it (a slider's grid) and the remainder stays in
    the residual. Values outside +/- ``range_sd`` are clipped to the slider range (the code then
    moves to the edge).
    """
    z = torch.as_tensor(z, dtype=torch.float32).reshape(-1)
    comps, sd = stats.components[:n], stats.component_sd[:n].clamp_min(1e-8)
    coords = (z - stats.mean) @ comps.T  # (n,)
    if step:
        snapped = torch.round(coords / sd / step) * step
        residual = z - stats.mean - (snapped * sd) @ comps
        return [round(float(v), 6) for v in snapped.clamp(-range_sd, range_sd)], residual
    residual = z - stats.mean - coords @ comps
    return [round(float(v), 3) for v in (coords / sd).clamp(-range_sd, range_sd)], residual


def zero_sliders(stats: LatentStats, z: torch.Tensor, n: int) -> tuple[list[float], torch.Tensor]:
    """Code (D,) -> (all ``n`` sliders at 0, residual (D,)): ``z`` itself becomes where the sliders
    start (e.g. the prior's origin, which is rarely the codes' mean)."""
    return [0.0] * n, torch.as_tensor(z, dtype=torch.float32).reshape(-1) - stats.mean


def from_sliders(stats: LatentStats, values: list[float], residual: torch.Tensor) -> torch.Tensor:
    """Slider values (SD, first ``len(values)`` directions) plus the residual -> code (D,)."""
    n = len(values)
    if n > len(stats.components):
        raise InputError(f"{n} slider values but only {len(stats.components)} directions")
    v = torch.as_tensor([float(x) for x in values], dtype=torch.float32)
    return stats.mean + torch.as_tensor(residual, dtype=torch.float32).reshape(-1) + \
        (v * stats.component_sd[:n]) @ stats.components[:n]


def subsample(indices: list[int], max_points: int, seed: int = 0) -> list[int]:
    """At most ``max_points`` of ``indices``, a seeded random choice kept in order."""
    if len(indices) <= max_points:
        return list(indices)
    return sorted(np.random.default_rng(seed).choice(indices, max_points, replace=False).tolist())


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
    indices = subsample(indices, MAX_MAP_POINTS)
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


@dataclass
class LatentMap:
    """Clips placed on the first two slider directions (in SD), with what is needed to load them."""

    xy: np.ndarray  # (N, 2)
    codes: torch.Tensor  # (N, D)
    labels: list[str | None]
    names: list[str]
    store_indices: list[int] | None = None  # clip index in ``store`` for each point, when from a store
    store: str | None = None


def _plane(stats: LatentStats, codes: torch.Tensor) -> np.ndarray:
    if len(stats.components) < 2:
        raise InputError("the model's latent statistics have fewer than two directions; no 2-D map")
    return (stats.project(codes, 2) / stats.component_sd[:2].clamp_min(1e-8)).numpy()


def checkpoint_map(stats: LatentStats) -> LatentMap:
    """The codes saved with the checkpoint (its training clips, no dataset needed)."""
    if len(stats.codes) == 0:
        raise InputError("this checkpoint has no saved latent codes (latents.safetensors); "
                         "pick a dataset store to map instead")
    return LatentMap(_plane(stats, stats.codes), stats.codes, list(stats.code_labels), list(stats.code_names))


def store_map(ck: Checkpoint, stats: LatentStats, store, max_points: int = 1500, seed: int = 0) -> LatentMap:
    """Encode (up to ``max_points``) clips of ``store`` (a preprocessing.Store) and place them on the
    directions of ``stats``."""
    shape = ck.spec.shape
    if store.config.shape != shape:
        raise InputError(f"store {store.path.name} has {store.config.shape[0]}x{store.config.shape[1]} "
                         f"spectrograms, the model expects {shape[0]}x{shape[1]}: pick a store "
                         "built with the model's settings")
    idx = subsample(store.indices(), max_points, seed)
    codes = encode_indices(ck.model, store.specs, idx)
    return LatentMap(_plane(stats, codes), codes, [store.clips[i]["label"] for i in idx],
                     [store.clip_name(i) for i in idx], idx, str(store.path))
