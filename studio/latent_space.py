"""What the Explore tab offers on top of :mod:`vae.latents`: labelled sliders and the ends of an
interpolation (label averages, example clips, the origin, a prior sample)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from preprocessing.errors import InputError
from vae.checkpoint import Checkpoint
from vae.generate import start_code
from vae.latents import MAX_SLIDERS, RANGE_SD, SLIDER_COVERAGE, LatentStats, n_sliders

from .clips import from_file

FAST_ITERS = 16  # Griffin-Lim iterations while a slider is dragged (see benchmarks/slider_latency.py)
SLIDER_STEP = 0.05  # the sliders' grid, in standard deviations


@dataclass
class SliderSpec:
    index: int
    label: str
    minimum: float
    maximum: float


def slider_specs(stats: LatentStats, coverage: float = SLIDER_COVERAGE, cap: int = MAX_SLIDERS,
                 range_sd: float = RANGE_SD) -> list[SliderSpec]:
    """One slider per principal direction, enough to cover ``coverage`` of the variance (at most ``cap``)."""
    return [SliderSpec(k, f"Direction {k + 1} ({100 * float(stats.explained[k]):.0f}% of the variation)",
                       -range_sd, range_sd) for k in range(n_sliders(stats, coverage, cap))]


def endpoint_choices(stats: LatentStats, examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(display, key) for the ends of an interpolation: label means, example clips, origin, a prior sample."""
    out = [(f"average of label '{name}'", f"label:{name}") for name in stats.label_names]
    out += [(f"example clip {name}", f"example:{path}") for name, path in examples]
    out += [("origin (centre of the prior)", "origin"), ("random sample from the prior", "prior")]
    return out


def endpoint_code(ck: Checkpoint, stats: LatentStats, key: str, seed: int | None = None) -> torch.Tensor:
    """The code (D,) an :func:`endpoint_choices` key stands for."""
    if not key:
        raise InputError("choose both ends of the interpolation")
    if key.startswith("label:"):
        name = key[len("label:"):]
        if name not in stats.label_names:
            raise InputError(f"label {name!r} is not known to this model (labels: {stats.label_names})")
        return stats.label_means[stats.label_names.index(name)].clone()
    if key.startswith("example:"):
        clip = from_file(Path(key[len("example:"):]), ck.spec.sample_rate, min_samples=ck.spec.n_fft)
        return start_code(ck, "clip", wave=clip.wave, sample_rate=clip.sample_rate)
    if key in ("origin", "prior"):
        return start_code(ck, key, seed=seed)
    raise InputError(f"unknown interpolation end {key!r}")
