"""Data augmentation of training batches in the spectrogram domain (issue #11, item 4: unseen voices).

Pure functions on a batch of normalised log-magnitude spectrograms ``x`` (B, 1, F, T) in [0, 1], where
0..1 spans ``top_db`` dB (the store's range) and F are linear-frequency bins from DC up. Each clip of a
batch draws its own transforms from a ``torch.Generator`` (drawn on the CPU, so the same seed gives the
same augmentation on any device); :func:`batch_generator` seeds it from (seed, epoch, step), so a stopped
and resumed run sees the batches an uninterrupted one does. Applied by :func:`augment_batch`, in order:

- warp: vocal-tract length / formants, the frequency axis resampled so that bin f moves to alpha * f;
- stretch: speaking rate, the time axis resampled so that frame t moves to s * t (cropped, or padded with 0);
- gain: a level offset of g dB, g / top_db in normalised units (clamped to [0, 1]);
- noise: white noise 20-40 dB below the clip's peak, added in linear power.

Each is applied to a clip with probability ``p``; a clip it skips is left exactly as it was.
"""

from __future__ import annotations

import numpy as np
import torch

PROB = 0.5  # chance that each transform is applied to a clip
WARP = (0.9, 1.1)  # frequency factor alpha
STRETCH = (0.9, 1.1)  # time factor s
GAIN_DB = (-6.0, 6.0)  # level offset, dB
NOISE_BELOW_PEAK_DB = (20.0, 40.0)  # noise level under the clip's peak, dB


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator for the augmentation of batch ``step`` of ``epoch`` (independent of the global RNG)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, step]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)  # (n,)


def _chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p  # (n,) bool


def resample_axis(x: torch.Tensor, factor: torch.Tensor, dim: int) -> torch.Tensor:
    """Move index i of axis ``dim`` (-2: F, -1: T) of each clip to ``factor[b] * i`` by linear interpolation.

    ``x``: (B, 1, F, T); ``factor``: (B,) positive. Output index k reads input position k / factor; positions
    past the last index read 0 (the lowest level). A factor of exactly 1 leaves the clip unchanged.
    """
    xt = x.transpose(dim, -1)  # (B, 1, A, L): the resampled axis last
    n = xt.shape[-1]
    pos = torch.arange(n, device=x.device, dtype=torch.float32) / factor.to(x.device, torch.float32)[:, None]
    i0 = pos.floor().long().clamp(0, n - 1)  # (B, L)
    w = (pos - i0).to(x.dtype)
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = (*xt.shape[:-1], n)
    g0, g1 = (i[:, None, None, :].expand(shape) for i in (i0, i1))
    w = w[:, None, None, :]
    out = (1 - w) * xt.gather(-1, g0) + w * xt.gather(-1, g1)  # (B, 1, A, L)
    out = out.masked_fill((pos > n - 1)[:, None, None, :], 0.0)
    return out.transpose(dim, -1).contiguous()


def add_gain(x: torch.Tensor, gain_db: torch.Tensor, top_db: float) -> torch.Tensor:
    """Add ``gain_db`` (B,) dB to each clip of ``x`` (B, 1, F, T): ``gain_db / top_db`` normalised, clamped."""
    return (x + (gain_db.to(x.device, x.dtype) / top_db)[:, None, None, None]).clamp(0.0, 1.0)


def add_noise(x: torch.Tensor, below_peak_db: torch.Tensor, noise: torch.Tensor, top_db: float) -> torch.Tensor:
    """Add white noise ``below_peak_db`` (B,) dB under each clip's peak, in linear power.

    ``noise``: (B, 1, F, T) non-negative power draws of mean 1 (exponential: the power of a white-noise
    STFT bin). Levels are taken relative to the floor 0 (``top_db`` under 1); the result never lies below
    ``x`` and is clamped to [0, 1].
    """
    db = x * top_db  # (B, 1, F, T), dB above the floor
    peak = db.amax(dim=(1, 2, 3))  # (B,)
    level = (peak - below_peak_db.to(x.device, x.dtype))[:, None, None, None]  # (B, 1, 1, 1) dB
    power = torch.pow(10.0, db / 10) + torch.pow(10.0, level / 10) * noise.to(x.device, x.dtype)
    return (10 * torch.log10(power) / top_db).clamp(0.0, 1.0).maximum(x)  # maximum: no rounding below x


def augment_batch(x: torch.Tensor, gen: torch.Generator, top_db: float, p: float = PROB) -> torch.Tensor:
    """Warp, stretch, gain and noise, each applied to a clip of ``x`` (B, 1, F, T) with probability ``p``.

    Random values come from ``gen`` (CPU) in a fixed order, whatever ``p``; returns a new tensor of
    ``x``'s shape, dtype and device, in [0, 1].
    """
    b = x.shape[0]
    one = torch.ones(b)
    alpha = torch.where(_chosen(b, p, gen), _uniform(b, *WARP, gen), one)
    speed = torch.where(_chosen(b, p, gen), _uniform(b, *STRETCH, gen), one)
    gain = torch.where(_chosen(b, p, gen), _uniform(b, *GAIN_DB, gen), torch.zeros(b))
    noisy, below = _chosen(b, p, gen), _uniform(b, *NOISE_BELOW_PEAK_DB, gen)
    noise = torch.empty(x.shape).exponential_(1.0, generator=gen)  # (B, 1, F, T)
    out = resample_axis(x, alpha, -2)
    out = resample_axis(out, speed, -1)
    out = add_gain(out, gain, top_db)
    with_noise = add_noise(out, below, noise, top_db)
    return torch.where(noisy.to(x.device)[:, None, None, None], with_noise, out)
