"""Clips to listen to and reconstruct: from a store, a file, an upload or the microphone.

A :class:`Clip` is mono float32 audio at a given sample rate with a name for people. Long
inputs are cut to ``MAX_SECONDS`` so one request never runs for minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocessing.audio import AudioError, load_audio, resample
from preprocessing.store import PreprocessError, Store, clip_audio

MAX_SECONDS = 30.0  # longest clip the app reconstructs in one go


@dataclass
class Clip:
    wave: np.ndarray  # (n,) float32
    sample_rate: int
    name: str
    label: str | None = None
    note: str = ""  # e.g. "the source file is gone: resynthesised from the stored spectrogram"

    @property
    def duration(self) -> float:
        return len(self.wave) / self.sample_rate


def _limit(wave: np.ndarray, sr: int, max_seconds: float) -> tuple[np.ndarray, str]:
    n = int(max_seconds * sr)
    if len(wave) > n:
        return wave[:n], f"cut to the first {max_seconds:g} s"
    return wave, ""


def from_store(store: Store, index: int, sample_rate: int) -> Clip:
    """Clip ``index`` of ``store`` at ``sample_rate`` Hz (its source file, or its spectrogram resynthesised)."""
    wave, sr, from_source = clip_audio(store, int(index))
    c = store.clips[int(index)]
    note = "" if from_source else "source file not found: this is the stored spectrogram, resynthesised"
    return Clip(resample(wave, sr, sample_rate).astype(np.float32), sample_rate, store.clip_name(int(index)),
                c["label"], note)


def random_index(store: Store, seed: int | None = None, split: str = "test") -> int:
    """A random clip index of ``split`` (all clips when that split is empty)."""
    pool = store.indices(split) or store.indices()
    if not pool:
        raise PreprocessError(f"store {store.path} has no clips")
    return int(np.random.default_rng(seed).choice(pool))


def from_file(path: str | Path | None, sample_rate: int, max_seconds: float = MAX_SECONDS,
              min_samples: int = 1) -> Clip:
    """An audio file (upload, recording, example) at ``sample_rate`` Hz; raises AudioError with the reason."""
    if not path:
        raise AudioError("", "no audio given: upload a file, record one, or pick an example")
    wave = load_audio(path, sample_rate, min_samples=min_samples)
    wave, note = _limit(wave, sample_rate, max_seconds)
    return Clip(wave, sample_rate, Path(path).name, None, note)


def from_array(sr_in: int, data: np.ndarray, sample_rate: int, name: str = "recording",
               max_seconds: float = MAX_SECONDS) -> Clip:
    """A (sample rate, samples) pair as Gradio's microphone gives it: int or float, mono or (n, channels)."""
    data = np.asarray(data)
    if data.size == 0:
        raise AudioError(name, "the recording is empty")
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if not np.isfinite(data).all():
        raise AudioError(name, "contains NaN or infinite samples")
    wave = resample(data, int(sr_in), sample_rate)
    wave, note = _limit(wave, sample_rate, max_seconds)
    return Clip(wave.astype(np.float32), sample_rate, name, None, note)
