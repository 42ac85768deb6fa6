"""What the Explore tab offers on top of :mod:`vae.latents`: labelled sliders (principal directions, and
directions named by a property, :mod:`vae.named_directions`), the ends of an interpolation (label averages,
example clips, the origin, a prior sample), and the map's colours."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from preprocessing.errors import InputError
from vae.checkpoint import Checkpoint
from vae.generate import display_range, start_code
from vae.latents import MAX_SLIDERS, RANGE_SD, SLIDER_COVERAGE, LatentMap, LatentStats, n_sliders
from vae.named_directions import model_decoder
from vae.properties import PROPERTIES, measure_all

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


NAMED_SLIDER_STEPS = 60  # a named slider's grid: about this many steps over its range


@dataclass
class NamedSliderSpec:
    """A slider along a named direction, in the property's own unit (``per_sd`` of it per SD of the codes)."""

    name: str  # the property, a key of vae.properties.PROPERTIES
    label: str  # e.g. "darker ↔ brighter (spectral centroid, Hz)"
    minimum: float
    maximum: float
    step: float
    per_sd: float  # slider units per SD along the direction: the change measured on the decoder


def _nice_step(span: float, steps: int = NAMED_SLIDER_STEPS) -> float:
    """A 1-2-5 step of about ``span / steps``."""
    raw = max(span / steps, 1e-9)
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def named_slider_specs(stats: LatentStats, range_sd: float = RANGE_SD) -> list[NamedSliderSpec]:
    """One slider per offered named direction (``stats.named.offered()``, in that order), ranging over about
    +/- ``range_sd`` SD along it, in the change of the property it predicts (the property's unit)."""
    nd = stats.named
    if nd is None:
        return []
    out = []
    for i in nd.offered():
        p = PROPERTIES[nd.names[i]]
        per_sd = float(nd.slope[i]) * p.scale
        step = _nice_step(2 * range_sd * per_sd)
        top = round(max(step, round(range_sd * per_sd / step) * step), 10)  # 3.4, not 3.4000000000000004
        out.append(NamedSliderSpec(p.name, f"{p.low} ↔ {p.high} ({p.title}, {p.slider_unit})", -top, top, step,
                                   per_sd))
    return out


def named_left_out(stats: LatentStats) -> list[str]:
    """The properties fitted for this model but not offered as sliders (``NamedDirections.passes``)."""
    nd = stats.named
    return [] if nd is None else [PROPERTIES[n].title for i, n in enumerate(nd.names) if not nd.passes(i)]


def named_sds(stats: LatentStats, values: list[float]) -> list[float]:
    """Named slider values (the property's unit, in :func:`named_slider_specs` order) -> SD along each
    direction, as ``vae.latents.from_sliders`` takes them."""
    specs = named_slider_specs(stats)
    if len(values) > len(specs):
        raise InputError(f"{len(values)} named slider values but this model offers {len(specs)} named directions")
    return [float(v) / spec.per_sd for v, spec in zip(values, specs)]


COLOUR_BY_LABEL = "label"


def colour_choices() -> list[tuple[str, str]]:
    """(display, key) for the map's colours: the label, or any property."""
    return [("label", COLOUR_BY_LABEL)] + [(f"{p.title} ({p.slider_unit})", p.name) for p in PROPERTIES.values()]


def map_colours(ck: Checkpoint, stats: LatentStats, m: LatentMap, name: str) -> tuple[np.ndarray, str] | None:
    """Property ``name`` of each point of map ``m`` (values (N,) in the slider's unit, colour bar title), measured
    on the decoded codes (the saved measures for the checkpoint's own codes); None to colour by label."""
    if not name or name == COLOUR_BY_LABEL:
        return None
    if name not in PROPERTIES:
        raise InputError(f"cannot colour the map by {name!r}; choose one of {', '.join(PROPERTIES)} or the label")
    p, nd = PROPERTIES[name], stats.named
    if m.store is None and nd is not None and name in nd.names and len(nd.values) == len(m.codes):
        v = nd.values[:, nd.names.index(name)]
    else:
        decode_db = model_decoder(ck.model, display_range(ck))
        v = measure_all(torch.cat([decode_db(m.codes[s:s + 64]) for s in range(0, len(m.codes), 64)]),
                        ck.spec.sample_rate, [name])[name]
    return v.numpy() * p.scale, f"{p.title} ({p.slider_unit}), decoded"


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
