"""Moving through a model's latent space: sliders, start points, interpolation, the 2-D map.

The sliders are coordinates along the principal directions of the latent codes of real clips
(:class:`~vae.latents.LatentStats`), in standard deviations of the codes along each direction.
A code ``z`` is split into those coordinates plus a *residual* (the part of ``z`` outside the
slider directions), so starting from a clip keeps everything about it the sliders do not cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from preprocessing.store import Store

from .checkpoint import Checkpoint
from .clips import Clip, from_file
from .generate import analyse, decode, encode, sample, to_wave
from .latents import MAX_SLIDERS, SLIDER_COVERAGE, LatentStats, encode_indices

RANGE_SD = 3.0  # slider range, +/- this many standard deviations
FAST_ITERS = 16  # Griffin-Lim iterations while a slider is dragged (see benchmarks/slider_latency.py)


def prior_stats(latent_dim: int, k: int = MAX_SLIDERS) -> LatentStats:
    """Stand-in statistics for a checkpoint without ``latents.safetensors``: the prior's axes."""
    k = min(k, latent_dim)
    return LatentStats(
        mean=torch.zeros(latent_dim), components=torch.eye(latent_dim)[:k], component_sd=torch.ones(k),
        explained=torch.full((k,), 1.0 / latent_dim), label_names=[], label_means=torch.zeros(0, latent_dim),
        codes=torch.zeros(0, latent_dim), code_labels=[], code_names=[],
    )


@dataclass
class SliderSpec:
    index: int
    label: str
    minimum: float
    maximum: float


def slider_specs(stats: LatentStats, coverage: float = SLIDER_COVERAGE, cap: int = MAX_SLIDERS,
                 range_sd: float = RANGE_SD) -> list[SliderSpec]:
    """One slider per principal direction, enough to cover ``coverage`` of the variance (at most ``cap``)."""
    n = min(stats.n_sliders(coverage, cap), len(stats.components))
    return [SliderSpec(k, f"Direction {k + 1} ({100 * float(stats.explained[k]):.0f}% of the variation)",
                       -range_sd, range_sd) for k in range(n)]


def covered(stats: LatentStats, n: int) -> float:
    """Share of the codes' variance along the first ``n`` directions."""
    return float(stats.explained[:n].sum())


def to_sliders(stats: LatentStats, z: torch.Tensor, n: int,
               range_sd: float = RANGE_SD) -> tuple[list[float], torch.Tensor]:
    """Code (D,) -> (slider values in SD for the first ``n`` directions, residual (D,)).

    Values outside +/- ``range_sd`` are clipped to the slider range (the code then moves to the edge).
    """
    z = torch.as_tensor(z, dtype=torch.float32).reshape(-1)
    comps, sd = stats.components[:n], stats.component_sd[:n].clamp_min(1e-8)
    coords = (z - stats.mean) @ comps.T  # (n,)
    residual = z - stats.mean - coords @ comps
    values = (coords / sd).clamp(-range_sd, range_sd)
    return [round(float(v), 3) for v in values], residual


def from_sliders(stats: LatentStats, values: list[float], residual: torch.Tensor) -> torch.Tensor:
    """Slider values (SD, first ``len(values)`` directions) plus the residual -> code (D,)."""
    n = len(values)
    if n > len(stats.components):
        raise ValueError(f"{n} slider values but only {len(stats.components)} directions")
    v = torch.as_tensor([float(x) for x in values], dtype=torch.float32)
    return stats.mean + torch.as_tensor(residual, dtype=torch.float32).reshape(-1) + \
        (v * stats.component_sd[:n]) @ stats.components[:n]


def encode_clip(ck: Checkpoint, clip: Clip) -> torch.Tensor:
    """Posterior mean (D,) of the first window of ``clip`` (at the model's sample rate)."""
    if clip.sample_rate != ck.spec.sample_rate:
        raise ValueError(f"clip is at {clip.sample_rate} Hz, the model at {ck.spec.sample_rate} Hz")
    a = analyse(ck, clip.wave)
    return encode(ck, a.specs[:1])[0][0]


def start_code(ck: Checkpoint, kind: str, *, temperature: float = 1.0, seed: int | None = None,
               clip: Clip | None = None) -> torch.Tensor:
    """Where exploring starts: ``"origin"`` (the prior's centre), ``"prior"`` (a sample at
    ``temperature``) or ``"clip"`` (the encoding of ``clip``). Returns a code (D,)."""
    d = ck.model_cfg.latent_dim
    if kind == "origin":
        return torch.zeros(d)
    if kind == "prior":
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        return sample(ck, 1, temperature, seed)[0]
    if kind == "clip":
        if clip is None:
            raise ValueError("no clip to start from: pick an example, upload a file or click the map")
        return encode_clip(ck, clip)
    raise ValueError(f"unknown start {kind!r}; use 'origin', 'prior' or 'clip'")


def display_range(ck: Checkpoint) -> tuple[float, float]:
    """The dB range decoded spectrograms are shown and played in (the store's global range, or a
    typical per-clip range for models trained with per-clip normalisation)."""
    if ck.spec.normalisation == "global" and ck.spec.ref_db is not None:
        return ck.spec.ref_db - ck.spec.top_db, ck.spec.ref_db
    lo, hi = ck.meta.get("typical_range", (-40.0, 30.0))
    return float(lo), float(hi)


@dataclass
class Rendered:
    """A decoded code: spectrogram in dB (F, T), audio (n,), and the dB scale to draw it with."""

    db: np.ndarray
    wave: np.ndarray
    vmin: float
    vmax: float


def _rendered(ck: Checkpoint, x: torch.Tensor, phase: str | None, n_iter: int | None) -> Rendered:
    """A decoded spectrogram (F, T) in [0, 1] -> dB image and audio on the model's display range."""
    lo, hi = display_range(ck)
    return Rendered((x * (hi - lo) + lo).numpy(), to_wave(ck, x, [(lo, hi)], phase=phase, n_iter=n_iter), lo, hi)


def render(ck: Checkpoint, z: torch.Tensor, phase: str | None = None, n_iter: int | None = None) -> Rendered:
    """Decode one code (D,) to a spectrogram and audio."""
    return _rendered(ck, decode(ck, z)[0], phase, n_iter)


def interpolation(ck: Checkpoint, z_a: torch.Tensor, z_b: torch.Tensor, steps: int,
                  phase: str | None = None, n_iter: int | None = None) -> list[Rendered]:
    """``steps`` decoded codes on the straight line from ``z_a`` to ``z_b`` (ends included)."""
    if not 2 <= steps <= 32:
        raise ValueError(f"interpolation takes 2 to 32 steps, got {steps}")
    t = torch.linspace(0, 1, steps)[:, None]
    zs = (1 - t) * z_a.reshape(1, -1) + t * z_b.reshape(1, -1)
    return [_rendered(ck, x, phase, n_iter) for x in decode(ck, zs)]  # decode: (steps, F, T)


def join_waves(waves: list[np.ndarray], sample_rate: int, gap_s: float = 0.15) -> np.ndarray:
    """The clips one after another with ``gap_s`` seconds of silence between them."""
    gap = np.zeros(int(gap_s * sample_rate), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, w in enumerate(waves):
        parts += [gap, w] if i else [w]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def endpoint_choices(stats: LatentStats, examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(display, key) for the ends of an interpolation: label means, example clips, origin, a prior sample."""
    out = [(f"average of label '{name}'", f"label:{name}") for name in stats.label_names]
    out += [(f"example clip {name}", f"example:{path}") for name, path in examples]
    out += [("origin (centre of the prior)", "origin"), ("random sample from the prior", "prior")]
    return out


def endpoint_code(ck: Checkpoint, stats: LatentStats, key: str, seed: int | None = None) -> torch.Tensor:
    """The code (D,) an :func:`endpoint_choices` key stands for."""
    if not key:
        raise ValueError("choose both ends of the interpolation")
    if key.startswith("label:"):
        name = key[len("label:"):]
        if name not in stats.label_names:
            raise ValueError(f"label {name!r} is not known to this model (labels: {stats.label_names})")
        return stats.label_means[stats.label_names.index(name)].clone()
    if key.startswith("example:"):
        clip = from_file(Path(key[len("example:"):]), ck.spec.sample_rate, min_samples=ck.spec.n_fft)
        return encode_clip(ck, clip)
    if key in ("origin", "prior"):
        return start_code(ck, key, seed=seed)
    raise ValueError(f"unknown interpolation end {key!r}")


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
        raise ValueError("the model's latent statistics have fewer than two directions; no 2-D map")
    return (stats.project(codes, 2) / stats.component_sd[:2].clamp_min(1e-8)).numpy()


def checkpoint_map(stats: LatentStats) -> LatentMap:
    """The codes saved with the checkpoint (its training clips, no dataset needed)."""
    if len(stats.codes) == 0:
        raise ValueError("this checkpoint has no saved latent codes (latents.safetensors); "
                         "pick a dataset store to map instead")
    return LatentMap(_plane(stats, stats.codes), stats.codes, list(stats.code_labels), list(stats.code_names))


def store_map(ck: Checkpoint, stats: LatentStats, store: Store, max_points: int = 1500, seed: int = 0) -> LatentMap:
    """Encode (up to ``max_points``) clips of ``store`` and place them on the checkpoint's directions."""
    if store.config.shape != ck.spec.shape:
        raise ValueError(f"store {store.path.name} has {store.config.shape[0]}x{store.config.shape[1]} "
                         f"spectrograms, the model expects {ck.spec.shape[0]}x{ck.spec.shape[1]}: pick a store "
                         "built with the model's settings")
    idx = store.indices()
    if len(idx) > max_points:
        idx = sorted(np.random.default_rng(seed).choice(idx, max_points, replace=False).tolist())
    codes = encode_indices(ck.model, store.specs, idx)
    return LatentMap(_plane(stats, codes), codes, [store.clips[i]["label"] for i in idx],
                     [store.clip_name(i) for i in idx], idx, str(store.path))
