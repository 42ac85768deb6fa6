"""Reconstruct a clip and compare it with the original: spectrograms on one scale, audio, metrics.

Also resynthesises the *original* spectrogram with the same phase method, so people can tell
what the model loses from what phase recovery alone loses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from preprocessing.config import PHASE_METHODS
from preprocessing.spectrogram import denormalise

from . import metrics
from .checkpoint import Checkpoint
from .clips import Clip
from .generate import reconstruct_audio, to_wave


@dataclass
class Comparison:
    sample_rate: int
    original: np.ndarray  # (n,) the input audio at the model's rate
    reconstruction: np.ndarray  # (n,) through the VAE and the phase method
    phase_only: np.ndarray  # (n,) the original spectrogram through the phase method alone
    original_db: np.ndarray  # (F, W*T) the model's view of the input, windows side by side
    reconstruction_db: np.ndarray  # (F, W*T)
    vmin: float  # one colour scale for both plots, dB
    vmax: float
    lsd_db: float  # log-spectral distance, original vs reconstruction
    spectral_convergence: float
    phase_only_lsd_db: float
    phase_only_sc: float
    n_windows: int
    phase: str
    n_iter: int | None

    def metrics_markdown(self) -> str:
        iters = f" with {self.n_iter} Griffin-Lim iterations" if self.phase == "griffinlim" else " (zero phase)"
        return (
            "| | log-spectral distance (dB) | spectral convergence |\n|---|---|---|\n"
            f"| **VAE reconstruction**{iters} | {self.lsd_db:.2f} | {self.spectral_convergence:.3f} |\n"
            f"| original spectrogram, phase method only | {self.phase_only_lsd_db:.2f} | {self.phase_only_sc:.3f} |\n\n"
            "Lower is closer to the original for both (0 = identical). Log-spectral distance is the typical "
            "difference in loudness per frequency band, in dB; spectral convergence is the relative error of "
            "the magnitude spectrogram. The second row shows how much is lost by rebuilding the phase alone, "
            "without the model.")


def joined_db(specs: torch.Tensor, ranges: list[tuple[float, float]]) -> np.ndarray:
    """Normalised windows (W, F, T) -> one dB image (F, W*T), each window with its own range."""
    return torch.cat([denormalise(w, lo, hi) for w, (lo, hi) in zip(specs, ranges)], dim=-1).numpy()


def compare(ck: Checkpoint, clip: Clip, phase: str | None = None, n_iter: int | None = None) -> Comparison:
    """Reconstruct ``clip`` (at the model's sample rate) and measure it against the original."""
    if clip.sample_rate != ck.spec.sample_rate:
        raise ValueError(f"clip is at {clip.sample_rate} Hz but the model works at {ck.spec.sample_rate} Hz")
    phase = phase or ck.spec.phase
    if phase not in PHASE_METHODS:
        raise ValueError(f"unknown phase method {phase!r}; use one of {PHASE_METHODS}")
    if n_iter is not None and n_iter < 1:
        raise ValueError(f"Griffin-Lim needs at least 1 iteration, got {n_iter}")
    wave = clip.wave
    if len(wave) < ck.spec.n_fft:
        raise ValueError(f"clip {clip.name} is {len(wave)} samples long, shorter than one STFT frame ({ck.spec.n_fft})")
    recon, a, x_hat = reconstruct_audio(ck, wave, phase, n_iter)
    phase_only = (to_wave(ck, a.specs, a.ranges, phase, n_iter)[: a.length] / a.gain).astype(np.float32)
    sr = ck.spec.sample_rate
    lo = min(r[0] for r in a.ranges)
    hi = max(r[1] for r in a.ranges)
    return Comparison(
        sample_rate=sr, original=wave.astype(np.float32), reconstruction=recon, phase_only=phase_only,
        original_db=joined_db(a.specs, a.ranges), reconstruction_db=joined_db(x_hat, a.ranges),
        vmin=float(lo), vmax=float(hi),
        lsd_db=metrics.log_spectral_distance(wave, recon, sr),
        spectral_convergence=metrics.spectral_convergence(wave, recon, sr),
        phase_only_lsd_db=metrics.log_spectral_distance(wave, phase_only, sr),
        phase_only_sc=metrics.spectral_convergence(wave, phase_only, sr),
        n_windows=len(a.specs), phase=phase,
        n_iter=(n_iter or ck.spec.griffinlim_iters) if phase == "griffinlim" else None,
    )
