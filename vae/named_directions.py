"""Directions in latent space named by what they change: louder, brighter, higher, noisier, longer.

Each property of :mod:`vae.properties` is regressed on the training clips' codes (ridge regression, closed
form); its direction is the normalised weight vector, pointing the way the property grows. For a temporal
model a code is a sequence (D, T') and the regression is on its mean frame (D,), as a slider moves every
frame by the same offset (see :mod:`vae.latents`).

The property is measured on each code's *decoded* spectrogram, not on the original clip: the direction
should move what the decoder makes (what a slider plays), the target then holds nothing the codes cannot
say (reconstruction error, octave errors of pitch on noisy recordings), and it needs only the model and the
codes saved in ``latents.safetensors`` — so any checkpoint gets named directions without its dataset.

Each direction is then checked by decoding along it: from ``SWEEP_STARTS`` saved codes, ``SWEEP_POINTS``
positions over the slider's range (+/- ``RANGE_SD`` standard deviations of the codes along it). A slider is
offered only when the held-out R² of the fit, the Spearman correlation between position and measured
property (median over the starts) and the change over the whole range pass the thresholds below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from preprocessing.errors import InputError

from .properties import PROPERTIES, measure_all

RANGE_SD = 3.0  # the slider range, +/- this many SD of the codes along the direction (as vae.latents.RANGE_SD)
RIDGE = 1.0  # ridge penalty: lambda = RIDGE x n x the codes' mean variance per dimension (see fit_direction)
LINEAR_RIDGE = 1e-3  # the near-least-squares fit whose held-out R² says how much of a property the codes hold
FOLDS = 5  # held-out R²: k-fold cross-validation over the clips
SWEEP_POINTS = 9  # positions decoded along each direction
SWEEP_STARTS = 8  # codes the sweeps start from (a seeded sample of the saved codes)
MIN_R2 = 0.5  # a slider is offered when its held-out R² is at least this ...
MIN_SPEARMAN = 0.8  # ... the property rises monotonically along it (median Spearman over the starts) ...
MIN_CHANGE_SD = 0.5  # ... and the whole range changes it by at least this many SDs of it across the clips
MIN_CODES = 2 * FOLDS  # fewer codes than this: no named directions

Decoder = Callable[[torch.Tensor], torch.Tensor]  # codes (B, *latent_shape) -> dB spectrograms (B, F, T)


@dataclass
class NamedDirections:
    """Fitted property directions, one row per property in ``names`` (P of them), in a D-dim frame space."""

    names: list[str]  # keys of vae.properties.PROPERTIES
    directions: torch.Tensor  # (P, D) unit vectors, the property grows along +
    sd: torch.Tensor  # (P,) SD of the codes (mean frames) along each direction
    slope: torch.Tensor  # (P,) decoded property's change per SD along the direction (its unit; median over starts)
    r2: torch.Tensor  # (P,) held-out R² (k-fold) of the property predicted from the position along the direction
    r2_linear: torch.Tensor  # (P,) the same for a near-least-squares fit (LINEAR_RIDGE): what the codes hold
    spearman: torch.Tensor  # (P,) median Spearman between slider position and decoded property
    spread: torch.Tensor  # (P,) SD of the property across the clips (its unit)
    values: torch.Tensor  # (N, P) the property of each saved code, decoded (what the fit used; the map's colours)

    def passes(self, i: int) -> bool:
        """Whether direction ``i`` is good enough to offer as a slider (see the module's thresholds)."""
        change = 2 * RANGE_SD * float(self.slope[i])
        return (float(self.r2[i]) >= MIN_R2 and float(self.spearman[i]) >= MIN_SPEARMAN
                and change >= MIN_CHANGE_SD * float(self.spread[i]))

    def offered(self) -> list[int]:
        """Indices of the directions offered as sliders, in ``names`` order."""
        return [i for i in range(len(self.names)) if self.passes(i)]

    def offset(self, sds: Sequence[float], which: Sequence[int] | None = None) -> torch.Tensor:
        """The frame offset (D,) of moving ``sds[j]`` SD along direction ``which[j]`` (default: the offered
        ones, in order), all at once."""
        which = self.offered() if which is None else list(which)
        if len(sds) > len(which):
            raise InputError(f"{len(sds)} named slider values but only {len(which)} named directions")
        out = torch.zeros(self.directions.shape[1])
        for v, i in zip(sds, which):
            out += float(v) * self.sd[i] * self.directions[i]
        return out

    def to_sd(self, i: int, value: float) -> float:
        """A change of the property by ``value`` (its unit) -> SD along direction ``i`` (the measured slope)."""
        return float(value) / max(float(self.slope[i]), 1e-12)


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of ``x`` (n,), ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return (sums / counts)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of (n,) and (n,); 0 when either is constant."""
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else 0.0


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ridge regression of y (n,) on x (n, D), intercept unpenalised: (w (D,), x mean (D,), y mean ())."""
    x, y = x.double(), y.double()
    xm, ym = x.mean(0), y.mean()
    xc = x - xm
    w = torch.linalg.solve(xc.T @ xc + lam * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ (y - ym))
    return w, xm, ym


def penalty(x: torch.Tensor, strength: float = RIDGE) -> float:
    """The ridge lambda for codes x (n, D): ``strength`` x n x their mean variance per dimension."""
    x = x.double()
    return max(strength * float(((x - x.mean(0)) ** 2).sum()) / x.shape[1], 1e-12)  # > 0: solvable


def held_out_r2(x: torch.Tensor, y: torch.Tensor, strength: float = RIDGE, folds: int = FOLDS, seed: int = 0) -> float:
    """R² of predicting y (n,) from x (n, D) on held-out clips (k-fold): per fold, the ridge direction and then a
    least-squares line of y on the position along it, both fitted without the fold. (The line undoes ridge's
    shrinkage, so the figure says how well the position along the direction predicts y, not how much the
    penalty shrank the weights.)"""
    n = len(x)
    x, y = x.double(), y.double()
    pred = torch.empty(n, dtype=torch.float64)
    for f in torch.randperm(n, generator=torch.Generator().manual_seed(seed)).chunk(folds):
        train = torch.ones(n, dtype=torch.bool)
        train[f] = False
        w, xm, ym = ridge(x[train], y[train], penalty(x[train], strength))
        t = (x - xm) @ (w / w.norm().clamp_min(1e-30))  # (n,) position along the direction
        tt, yt = t[train], y[train]
        slope = float(((tt - tt.mean()) * (yt - ym)).sum()) / max(float(((tt - tt.mean()) ** 2).sum()), 1e-30)
        pred[f] = ym + slope * (t[f] - tt.mean())
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if total > 0 else 0.0


def fit_direction(x: torch.Tensor, y: torch.Tensor, strength: float = RIDGE) -> tuple[torch.Tensor, float, float]:
    """Codes x (n, D), property y (n,) -> (unit direction (D,) along which y grows, SD of x along it,
    held-out R²).

    Why this much ridge (lambda = n x the mean variance per dimension, ``RIDGE`` = 1): near-least-squares
    weights predict a little better (digits: R² +0.05-0.15) but lean on directions the codes hardly spread
    along, where the decoder barely responds (loudness moved 1% of the predicted change); at this penalty
    the decoded change is about the predicted one (see README, "Named directions").
    """
    w, _, _ = ridge(x, y, penalty(x, strength))
    d = (w / w.norm().clamp_min(1e-30)).float()
    xc = x.float() - x.float().mean(0)
    return d, float((xc @ d).std()), held_out_r2(x, y, strength)


def frames_mean(codes: torch.Tensor) -> torch.Tensor:
    """Codes (N, D) or sequences (N, D, T') -> (N, D): a sequence's mean frame."""
    return codes.mean(-1) if codes.dim() == 3 else codes


def sweep(decode_db: Decoder, starts: torch.Tensor, direction: torch.Tensor, sd: float, name: str,
          sample_rate: int, points: int = SWEEP_POINTS, range_sd: float = RANGE_SD) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``starts`` (S, *latent_shape) moved along ``direction`` (D,) to ``points`` positions in
    [-range_sd, range_sd] SD (every frame moved alike), and measure property ``name``.
    Returns (positions (points,) in SD, values (S, points) in the property's unit)."""
    pos = torch.linspace(-range_sd, range_sd, points)
    step = (sd * direction).reshape(-1, *([1] * (starts.dim() - 2)))  # (D,) or (D, 1): broadcast over frames
    z = torch.stack([s + p * step for s in starts for p in pos])  # (S * points, *latent_shape)
    vals = measure_all(decode_db(z), sample_rate, [name])[name].reshape(len(starts), points)
    return pos.numpy(), vals.numpy()


def sweep_starts(codes: torch.Tensor, n: int = SWEEP_STARTS, seed: int = 0) -> torch.Tensor:
    """A seeded sample of ``n`` of the codes (N, *latent_shape), the starts of the sweeps."""
    return codes[torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))[:n]]


def fit_named_directions(decode_db: Decoder, codes: torch.Tensor, sample_rate: int,
                         names: Sequence[str] | None = None, batch: int = 32) -> NamedDirections | None:
    """Named directions from codes (N, *latent_shape), decoded by ``decode_db`` (codes -> dB spectrograms
    (B, F, T)) ``batch`` at a time; None with fewer than ``MIN_CODES`` codes."""
    names = list(PROPERTIES) if names is None else list(names)
    if len(codes) < MIN_CODES:
        return None
    parts = [measure_all(decode_db(codes[s:s + batch]), sample_rate, names) for s in range(0, len(codes), batch)]
    measured = {n: torch.cat([m[n] for m in parts]) for n in names}  # decoded a batch at a time: bounded memory
    x, starts = frames_mean(codes), sweep_starts(codes)
    rows: list[tuple] = []
    for name in names:
        y = measured[name].double()
        d, sd, r2 = fit_direction(x, y)
        pos, vals = sweep(decode_db, starts, d, sd, name, sample_rate)
        slope = float(np.median([np.polyfit(pos, v, 1)[0] for v in vals]))  # robust to one start's octave jump
        rho = float(np.median([spearman(pos, v) for v in vals]))
        rows.append((d, sd, slope, r2, held_out_r2(x, y, LINEAR_RIDGE), rho, float(y.std())))
    d, sd, slope, r2, r2_linear, rho, spread = zip(*rows)
    f = torch.tensor
    return NamedDirections(names, torch.stack(d), f(sd), f(slope), f(r2), f(r2_linear), f(rho), f(spread),
                           torch.stack([measured[n] for n in names], 1).float())


def figures_table(nd: NamedDirections) -> str:
    """A markdown table: per property, held-out R² (slider's fit and near-least-squares), Spearman along the
    slider, the change over the slider's range, and whether the slider is offered."""
    rows = ["| property | R² held-out (slider's fit) | R² held-out (least squares) | Spearman along the slider "
            "| change over the slider's range | spread across clips (SD) | slider |",
            "|---|---|---|---|---|---|---|"]
    for i, name in enumerate(nd.names):
        p = PROPERTIES[name]
        change = 2 * RANGE_SD * float(nd.slope[i]) * p.scale
        change = 0.0 if abs(change) < 1e-6 * float(nd.spread[i]) * p.scale else change  # "0", not "-2e-14"
        rows.append(f"| {p.low} ↔ {p.high} ({p.title}) | {float(nd.r2[i]):.2f} | {float(nd.r2_linear[i]):.2f} "
                    f"| {float(nd.spearman[i]):.2f} | {change:+.3g} {p.slider_unit} "
                    f"| {float(nd.spread[i]) * p.scale:.3g} {p.slider_unit} "
                    f"| {'offered' if nd.passes(i) else 'left out'} |")
    return "\n".join(rows)


def model_decoder(model, db_range: tuple[float, float], batch: int = 32) -> Decoder:
    """A :class:`Decoder` for a VAE: codes -> its output (B, F, T) in [0, 1] -> dB on ``db_range`` (lo, hi)."""
    lo, hi = db_range
    device = next(model.parameters()).device

    @torch.no_grad()
    def decode_db(z: torch.Tensor) -> torch.Tensor:
        model.eval()
        out = [model.decode(z[s:s + batch].to(device))[:, 0].float().cpu() for s in range(0, len(z), batch)]
        return torch.cat(out) * (hi - lo) + lo

    return decode_db


def store_db_range(store, indices: Sequence[int]) -> tuple[float, float]:
    """The dB range (lo, hi) a decoded spectrogram of a model trained on ``store`` stands for: the store's
    global range, or (per-clip normalisation) the median range of the clips ``indices`` (as
    ``vae.generate.display_range`` reads from the checkpoint)."""
    cfg = store.config
    if cfg.normalisation == "global" and cfg.ref_db is not None:
        return cfg.ref_db - cfg.top_db, cfg.ref_db
    return tuple(float(np.median([store.clips[i][k] for i in indices])) for k in ("lo", "hi"))  # type: ignore[return-value]


def update_checkpoint(directory, store=None) -> NamedDirections | None:
    """(Re)fit the named directions of the checkpoint in ``directory`` and write them into its
    ``latents.safetensors``; returns them. Without ``store`` (a preprocessing.Store) they are fitted on the codes
    already saved there (no dataset needed); with one, all the latent statistics are recomputed from its
    training clips first (as a training run's end does)."""
    from .checkpoint import load_checkpoint
    from .generate import display_range
    from .latents import LatentStatsError, compute_latent_stats, load_latent_stats, save_latent_stats

    ck = load_checkpoint(directory)
    if store is not None:
        if store.config.shape != ck.spec.shape:
            raise InputError(f"store {store.path} has {store.config.shape} spectrograms, the model {ck.spec.shape}")
        stats = compute_latent_stats(ck.model, store, store.indices("train"))
    else:
        stats = load_latent_stats(directory, ck.model_cfg.latent_shape)
        if stats is None:
            raise LatentStatsError(f"{directory} has no latents.safetensors: pass the store it was trained on")
        stats.named = fit_named_directions(model_decoder(ck.model, display_range(ck)), stats.codes,
                                           ck.spec.sample_rate)
    save_latent_stats(directory, stats)
    return stats.named
