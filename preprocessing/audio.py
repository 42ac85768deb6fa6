"""Reading, checking and cutting audio.

Audio is read with soundfile (wav, flac, ogg, mp3), mixed to mono and resampled with
torchaudio. Every problem with a file raises :class:`AudioError` whose message names the file
and the reason, so callers can skip it and carry on.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from .errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SILENCE_PEAK = 1e-4  # below -80 dBFS a clip counts as silent
MAX_FILE_S = 3600.0  # longest audio file read: an hour of 48 kHz stereo is 1.4 GB of float32 while it loads
MAX_CHANNELS = 64


class AudioError(UserError):
    """A file that cannot be used, with the file named in the message."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if self.path else reason)


def is_audio_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    # The transform caches its sinc kernel; functional.resample would rebuild it per file.
    return torchaudio.transforms.Resample(orig, new)


MAX_RESAMPLE_FACTORS = 2**22  # (new / gcd) x (orig / gcd): torchaudio's sinc kernel grows with this product


def tractable_rates(orig_sr: int, new_sr: int) -> tuple[int, int]:
    """``(orig_sr, new_sr)``, or the nearest pair of rates whose ratio reduces to small enough integers for a
    bounded resampling kernel. A file at 7,919 Hz for a model at 8,000 Hz (coprime: a kernel of gigabytes)
    is read as 7,920 Hz: 0.013% fast, 0.2 cents, nothing anyone hears; rounding to tens of hertz keeps the
    error below 0.1% for rates from 8 kHz up."""
    for step in (1, 10, 50, 100, 1000):
        o, n = (max(step, round(r / step) * step) for r in (orig_sr, new_sr))
        g = math.gcd(o, n)
        if (o // g) * (n // g) <= MAX_RESAMPLE_FACTORS:
            return o, n
    return orig_sr, new_sr  # not reached: at step 1000 both factors are at most 192


def resample(wave: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a mono float32 signal (n,) from ``orig_sr`` to ``new_sr`` Hz: ``ceil(n * new_sr / orig_sr)``
    samples. Rates whose ratio is awkward are first rounded (:func:`tractable_rates`)."""
    if orig_sr == new_sr:
        return wave
    orig, new = tractable_rates(int(orig_sr), int(new_sr))
    with torch.no_grad():
        out = _resampler(orig, new)(torch.from_numpy(np.ascontiguousarray(wave))).numpy()
    return out if (orig, new) == (orig_sr, new_sr) else fit_length(out, math.ceil(len(wave) * new_sr / orig_sr))


def load_audio(path: str | Path, sample_rate: int, min_samples: int = 1) -> np.ndarray:
    """Read ``path`` as mono float32 at ``sample_rate`` Hz, shape (n,).

    Raises :class:`AudioError` for unsupported, empty, corrupt or non-finite files and for
    files shorter than ``min_samples`` after resampling.
    """
    path = Path(path)
    if not is_audio_path(path):
        raise AudioError(path, f"unsupported format {path.suffix or '(no extension)'!r}; "
                               f"use one of {', '.join(AUDIO_EXTENSIONS)}")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(path, f"cannot read file ({e.strerror})") from None
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
        if info.channels > MAX_CHANNELS or info.frames > MAX_FILE_S * info.samplerate:
            seconds = info.frames / max(info.samplerate, 1)
            raise AudioError(path, f"too large: {info.channels} channels, {seconds:.0f} s; the limits"
                                   f" are {MAX_CHANNELS} channels and {MAX_FILE_S / 60:.0f} minutes a file: "
                                   "split it into shorter files")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # soundfile raises several types for undecodable input
        raise AudioError(path, f"not readable as audio ({str(e).strip() or type(e).__name__})") from None
    if data.size == 0:
        raise AudioError(path, "contains no samples")
    wave = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)  # (n, channels) -> (n,); mono as it is
    if not np.isfinite(wave).all():
        raise AudioError(path, "contains NaN or infinite samples")
    wave = resample(wave, sr, sample_rate)
    if len(wave) < min_samples:
        raise AudioError(path, f"too short: {len(wave) / sample_rate:.3f}s, "
                               f"less than one STFT frame ({min_samples} samples at {sample_rate} Hz)")
    return wave.astype(np.float32, copy=False)


def peak(wave: np.ndarray) -> float:
    return float(np.abs(wave).max()) if wave.size else 0.0


def is_silent(wave: np.ndarray) -> bool:
    return peak(wave) < SILENCE_PEAK


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad (at the end) a signal (m,) to exactly (n,)."""
    if len(wave) >= n:
        return wave[:n]
    return np.pad(wave, (0, n - len(wave)))


def windows(wave: np.ndarray, n: int, mode: str = "all") -> list[tuple[int, np.ndarray]]:
    """Cut a signal into consecutive windows of ``n`` samples: [(offset, window (n,)), ...].

    ``mode="first"`` keeps only the first window (the study). With ``"all"``, a short signal
    gives one padded window, and a trailing partial window is kept (zero-padded) only if it
    holds at least half a window, so no window is mostly padding.
    """
    if mode == "first" or len(wave) <= n:
        return [(0, fit_length(wave, n))]
    count = max(1, math.floor(len(wave) / n + 0.5))
    return [(i * n, fit_length(wave[i * n:(i + 1) * n], n)) for i in range(count)]


def save_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Write a mono float signal (n,) as 16-bit PCM WAV, clipping to [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.nan_to_num(wave), -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path


def limit_peak(wave: np.ndarray, ceiling: float = 0.99) -> np.ndarray:
    """``wave`` scaled down (never up) so its peak is at most ``ceiling``: playable without clipping."""
    p = peak(wave)
    return wave * min(1.0, ceiling / p) if p > 0 else wave


def join_waves(waves: list[np.ndarray], sample_rate: int, gap_s: float = 0.15) -> np.ndarray:
    """The clips one after another with ``gap_s`` seconds of silence between them."""
    gap = np.zeros(int(gap_s * sample_rate), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, w in enumerate(waves):
        parts += [gap, w] if i else [w]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
