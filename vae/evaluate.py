"""Evaluate a checkpoint: reconstruct audio and measure how close it comes back.

:func:`compare` does it for one clip (spectrograms on one scale, audio, metrics); :func:`evaluate`
for a folder or a store's held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocessing.audio import AudioError, load_audio
from preprocessing.config import PHASE_METHODS
from preprocessing.errors import InputError
from preprocessing.labels import assign_splits, parse_label
from preprocessing.progress import ProgressFn
from preprocessing.spectrogram import denormalise
from preprocessing.store import PreprocessError, Skipped, Store, find_audio

from . import metrics
from .checkpoint import Checkpoint
from .generate import reconstruct_audio, to_wave


def select_files(inputs: str | Path, split: str = "auto") -> tuple[list[Path], list[Skipped], str]:
    """Audio files of a file, folder or store, limited to a split; returns (files, skipped, split).

    ``split="auto"``: a store's test split, every file of a folder.
    """
    path = Path(inputs)
    if (path / "manifest.json").is_file():
        store = Store(path)
        split = "test" if split == "auto" else split
        root = Path(store.meta["input"])
        sources = sorted({c["source"] for c in store.clips if split == "all" or c["split"] == split})
        files = [root / s for s in sources]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise PreprocessError(f"store {path} was built from {root}, which no longer holds "
                                  f"{len(missing)} of its files (e.g. {missing[0]}); evaluate the audio folder instead")
        return files, [], split
    root, files, skipped = find_audio(path)
    split = "all" if split == "auto" else split
    if split != "all":
        splits = assign_splits(files, [parse_label(f, root) for f in files], root)
        files = [f for f, s in zip(files, splits) if s == split]
    if not files:
        raise PreprocessError(f"no audio files of split {split!r} in {path}")
    return files, skipped, split


def file_labels(ck: Checkpoint, inputs: str | Path, files: list[Path]) -> list[str | None]:
    """Each file's label (from its name or folder, as a store labels it) for a conditional model, None for a
    label the model does not know; all None for an unconditional model."""
    if not ck.model_cfg.labels:
        return [None] * len(files)
    path = Path(inputs)
    root = Path(Store(path).meta["input"]) if (path / "manifest.json").is_file() else find_audio(path)[0]
    names = [parse_label(f, root).label for f in files]
    return [n if n in ck.model_cfg.labels else None for n in names]


def evaluate(
    ck: Checkpoint, inputs: str | Path, split: str = "auto", phase: str | None = None,
    n_iter: int | None = None, with_stoi: bool | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Mean reconstruction figures over the input files.

    ``spectrogram_mse`` compares normalised spectrograms in the model's own space;
    ``lsd_db``, ``spectral_convergence`` (and ``stoi`` for speech) compare the original
    recording with the resynthesised reconstruction, analysed with one fixed STFT
    (:mod:`vae.metrics`), so they compare across presets. A conditional model reconstructs each file
    with its own label (``labelled``: how many had one it knows).
    """
    with torch.random.fork_rng():  # Griffin-Lim starts from random phase: seed it, repeatable figures
        torch.manual_seed(0)
        return _evaluate(ck, inputs, split, phase, n_iter, with_stoi, progress)


def _evaluate(ck: Checkpoint, inputs: str | Path, split: str, phase: str | None, n_iter: int | None,
              with_stoi: bool | None, progress: ProgressFn | None) -> dict[str, Any]:
    files, skipped, split = select_files(inputs, split)
    sr = ck.spec.sample_rate
    with_stoi = sr <= 16000 if with_stoi is None else with_stoi  # STOI is a speech measure
    rows: list[dict[str, float]] = []
    n_windows = 0
    labels = file_labels(ck, inputs, files)
    for k, (f, label) in enumerate(zip(files, labels)):
        try:
            ref = load_audio(f, metrics.EVAL_SR, min_samples=1)
            wave = load_audio(f, sr, min_samples=ck.spec.n_fft)
        except AudioError as e:
            skipped.append(Skipped(str(f), e.reason))
            continue
        est, a, x_hat = reconstruct_audio(ck, wave, phase, n_iter, label)
        est = metrics.resample(est, sr, metrics.EVAL_SR)
        row = {"spectrogram_mse": metrics.spectrogram_mse(a.specs, x_hat),
               "lsd_db": metrics.log_spectral_distance(ref, est, metrics.EVAL_SR),
               "spectral_convergence": metrics.spectral_convergence(ref, est, metrics.EVAL_SR)}
        if with_stoi:
            row["stoi"] = metrics.stoi(ref, est, metrics.EVAL_SR)
        rows.append(row)
        n_windows += len(a.specs)
        if progress:
            progress(k + 1, len(files), f.name)
    if not rows:
        raise PreprocessError(f"none of the {len(files)} files could be evaluated")
    # STOI is NaN for clips too short for it: average over the files that have one, and say how many
    result: dict[str, Any] = {k: round(float(np.nanmean(v)), 5) if np.isfinite(v := [r[k] for r in rows]).any()
                              else None for k in rows[0]}
    if with_stoi:
        result["stoi_files"] = int(np.isfinite([r["stoi"] for r in rows]).sum())
    method = phase or ck.spec.phase
    if ck.model_cfg.labels:
        result["labelled"] = sum(label is not None for label in labels)
    result.update({"n_files": len(rows), "n_windows": n_windows, "split": split, "phase": method,
                   "griffinlim_iters": (n_iter or ck.spec.griffinlim_iters) if method == "griffinlim" else None,
                   "checkpoint": str(ck.path) if ck.path else None, "skipped": len(skipped)})
    return result


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


def joined_db(specs: torch.Tensor, ranges: list[tuple[float, float]]) -> np.ndarray:
    """Normalised windows (W, F, T) -> one dB image (F, W*T), each window with its own range."""
    return torch.cat([denormalise(w, lo, hi) for w, (lo, hi) in zip(specs, ranges)], dim=-1).numpy()


def compare(ck: Checkpoint, wave: np.ndarray, sample_rate: int, phase: str | None = None,
            n_iter: int | None = None, name: str = "clip") -> Comparison:
    """Reconstruct ``wave`` (n,) (at the model's sample rate) and measure it against the original.

    Also resynthesises the *original* spectrogram with the same phase method, so people can tell
    what the model loses from what phase recovery alone loses.
    """
    if sample_rate != ck.spec.sample_rate:
        raise InputError(f"clip is at {sample_rate} Hz but the model works at {ck.spec.sample_rate} Hz")
    phase = phase or ck.spec.phase
    if phase not in PHASE_METHODS:
        raise InputError(f"unknown phase method {phase!r}; use one of {PHASE_METHODS}")
    if n_iter is not None and n_iter < 1:
        raise InputError(f"Griffin-Lim needs at least 1 iteration, got {n_iter}")
    if len(wave) < ck.spec.n_fft:
        raise InputError(f"clip {name} is {len(wave)} samples long, shorter than one STFT frame ({ck.spec.n_fft})")
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
