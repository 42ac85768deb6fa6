"""Reconstruction metrics, in the spectrogram domain and the audio domain.

Audio-domain figures analyse both signals with one fixed STFT (``EVAL_*``), whatever the
model's own spectrogram settings, so models with different presets compare on common footing.
"""

from __future__ import annotations

import numpy as np
import torch

from preprocessing.audio import resample

EVAL_SR = 16000  # Hz
EVAL_N_FFT = 512  # 32 ms
EVAL_HOP = 128  # 8 ms
FLOOR_DB = 80.0  # levels more than this below the reference's peak count as the floor


def _stft_mag(wave: np.ndarray) -> torch.Tensor:
    w = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    spec = torch.stft(w, EVAL_N_FFT, EVAL_HOP, window=torch.hann_window(EVAL_N_FFT), return_complex=True)
    return spec.abs()  # (F, T)


def _aligned(ref: np.ndarray, est: np.ndarray, sr: int) -> tuple[torch.Tensor, torch.Tensor]:
    ref, est = resample(ref, sr, EVAL_SR), resample(est, sr, EVAL_SR)
    n = min(len(ref), len(est))
    return _stft_mag(ref[:n]), _stft_mag(est[:n])


def log_spectral_distance(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Mean over frames of the RMS dB difference over frequency (dB; 0 is identical).

    Both spectrograms are floored at the reference's peak minus 80 dB, so silence in the
    reference does not dominate.
    """
    r, e = _aligned(ref, est, sr)
    r_db, e_db = (20 * torch.log10(m.clamp_min(1e-10)) for m in (r, e))
    floor = r_db.max() - FLOOR_DB
    d = r_db.clamp_min(floor) - e_db.clamp_min(floor)
    return float(d.pow(2).mean(0).sqrt().mean())


def spectral_convergence(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """||S_ref - S_est||_F / ||S_ref||_F on STFT magnitudes (0 is identical)."""
    r, e = _aligned(ref, est, sr)
    return float(torch.linalg.norm(r - e) / torch.linalg.norm(r).clamp_min(1e-10))


def stoi(ref: np.ndarray, est: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility (0..1, higher is better), via pystoi.

    NaN when the reference has too little non-silent audio for STOI's 384 ms analysis segment
    (common for single FSDD digits): pystoi would warn and return a meaningless 1e-5.
    """
    import warnings

    from pystoi import stoi as _stoi

    n = min(len(ref), len(est))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Not enough STFT frames", category=RuntimeWarning)
        value = float(_stoi(ref[:n], est[:n], sr, extended=False))
    return float("nan") if value <= 1e-5 else value


def spectrogram_mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean squared error between normalised spectrograms (same shape)."""
    return float(torch.mean((torch.as_tensor(x) - torch.as_tensor(x_hat)) ** 2))
