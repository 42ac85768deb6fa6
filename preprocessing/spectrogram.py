"""Log-magnitude spectrograms, their normalisation, and their inversion back to audio.

Pure functions on tensors, in the style of ``torchaudio.functional``. Shapes: a waveform is
(..., n_samples); a spectrogram is (..., n_freq, n_frames) with n_freq = n_fft // 2 (the
Nyquist bin is dropped, as in the study). Levels are in dB re amplitude 1.0.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio

from .config import LIMITS, ConfigError, SpectrogramConfig

AMIN = 1e-5  # amplitude floor before log (-100 dB), as librosa.amplitude_to_db


@functools.lru_cache(maxsize=8)
def _stft(n_fft: int, hop_length: int) -> torchaudio.transforms.Spectrogram:
    return torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop_length, power=1.0)


@functools.lru_cache(maxsize=8)
def _griffinlim(n_fft: int, hop_length: int, n_iter: int, length: int) -> torchaudio.transforms.GriffinLim:
    # power=1.0: we pass magnitudes. The default (2.0) expects a power spectrogram and would
    # silently take the square root of our magnitudes, which sounds badly wrong.
    return torchaudio.transforms.GriffinLim(
        n_fft=n_fft, hop_length=hop_length, n_iter=n_iter, power=1.0, length=length
    )


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x.float()


def magnitude(wave: torch.Tensor | np.ndarray, cfg: SpectrogramConfig) -> torch.Tensor:
    """STFT magnitude (..., n_samples) -> (..., n_freq, n_frames), Nyquist bin dropped."""
    with torch.no_grad():
        return _stft(cfg.n_fft, cfg.hop_length)(_as_tensor(wave))[..., :-1, :]


def amplitude_to_db(mag: torch.Tensor) -> torch.Tensor:
    return 20.0 * torch.log10(mag.clamp_min(AMIN))


def db_to_amplitude(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(10.0, db / 20.0)


def log_spectrogram(wave: torch.Tensor | np.ndarray, cfg: SpectrogramConfig) -> torch.Tensor:
    """Waveform (..., n_samples) -> dB magnitude spectrogram (..., n_freq, n_frames)."""
    return amplitude_to_db(magnitude(wave, cfg))


def db_range(db: torch.Tensor, cfg: SpectrogramConfig) -> tuple[float, float]:
    """The (low, high) dB that map to 0 and 1 for one spectrogram (F, T).

    ``global``: the dataset's fixed range ``ref_db - top_db .. ref_db``. ``clip``: the clip's
    own min and max after flooring at ``max - top_db`` (the study, via librosa's top_db).
    """
    if cfg.normalisation == "global":
        if cfg.ref_db is None:
            raise ValueError("global normalisation needs ref_db; build a dataset store first")
        return cfg.ref_db - cfg.top_db, cfg.ref_db
    hi = float(db.max())
    return max(float(db.min()), hi - cfg.top_db), hi


def normalise(db: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Map dB in [lo, hi] to [0, 1] (clamped). Requires hi > lo."""
    if not hi > lo:
        raise ValueError(f"cannot normalise a flat spectrogram (min = max = {hi:.1f} dB): silent clip")
    return ((db - lo) / (hi - lo)).clamp(0.0, 1.0)


def denormalise(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Inverse of :func:`normalise`: [0, 1] -> dB."""
    return x * (hi - lo) + lo


def to_audio(
    db: torch.Tensor, cfg: SpectrogramConfig, phase: str | None = None, n_iter: int | None = None
) -> torch.Tensor:
    """dB spectrogram (..., n_freq, n_frames) -> waveform (..., n_samples).

    ``phase="griffinlim"`` estimates phase with torchaudio's Griffin-Lim (``n_iter``
    iterations); ``"zero"`` is the study's inverse STFT of the bare magnitudes.
    """
    phase = phase or cfg.phase
    lo, hi = LIMITS["griffinlim_iters"]
    if n_iter is not None and not (isinstance(n_iter, int | np.integer) and lo <= n_iter <= hi):
        raise ConfigError(f"Griffin-Lim iterations must be a whole number from {lo} to {hi}, got {n_iter!r}")
    mag = db_to_amplitude(db.float())
    mag = torch.cat([mag, torch.zeros_like(mag[..., :1, :])], dim=-2)  # restore Nyquist bin
    n_frames = mag.shape[-1]
    length = cfg.n_samples if n_frames == cfg.n_frames else (n_frames - 1) * cfg.hop_length
    with torch.no_grad():
        if phase == "griffinlim":
            return _griffinlim(cfg.n_fft, cfg.hop_length, n_iter or cfg.griffinlim_iters, length)(mag)
        if phase == "zero":
            window = torch.hann_window(cfg.n_fft)
            return torch.istft(mag.to(torch.complex64), cfg.n_fft, cfg.hop_length, window=window, length=length)
    raise ValueError(f"unknown phase method {phase!r}; use 'griffinlim' or 'zero'")
