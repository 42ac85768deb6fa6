"""Generation: encode, decode, reconstruct, sample, interpolate, and turn results into sound.

Spectrograms here are normalised model inputs, (B, F, T) in [0, 1]; latent codes are (B, D) for a
global model and sequences (B, D, T') for a temporal one (``ck.model_cfg.latent_shape``); waveforms
are float32 numpy arrays (n,) at the checkpoint's sample rate.

A conditional model (issue #14) takes a label name (``label``, one of ``ck.model_cfg.labels``) where it
encodes or decodes; ``None`` uses the mean of its label embeddings ("no label in particular").
:func:`relabel` keeps a clip's style and changes its label: the same voice saying another digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from preprocessing.audio import fit_length, is_silent, limit_peak, load_audio, peak, windows
from preprocessing.errors import InputError
from preprocessing.spectrogram import db_range, denormalise, log_spectrogram, normalise, to_audio

from .checkpoint import Checkpoint
from .conditioning import label_index, label_tensor
from .latents import LatentStats, load_latent_stats, sample_label_gaussian


def _labels(ck: Checkpoint, label: str | int | None, n: int) -> torch.Tensor | None:
    """Labels (n,) long on the model's device for ``label`` (None: none); :class:`InputError` for a label the
    model does not know, or any label for an unconditional model."""
    y = label_tensor(ck.model_cfg.labels, label, n)
    return None if y is None else y.to(ck.device)


def _model_input(x: torch.Tensor | np.ndarray, ck: Checkpoint) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if x.shape[-2:] != ck.spec.shape:
        raise InputError(f"spectrogram shape {tuple(x.shape[-2:])} does not match the model's {ck.spec.shape}")
    return x.reshape(-1, 1, *ck.spec.shape).to(ck.device)  # (B, 1, F, T)


@torch.no_grad()
def encode(ck: Checkpoint, x: torch.Tensor | np.ndarray, label: str | int | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectrograms (B, F, T) or (F, T) -> posterior (mu, logvar), each (B, *latent_shape); a conditional
    model reads them as clips of ``label``."""
    x = _model_input(x, ck)
    mu, logvar = ck.model.encode(x, _labels(ck, label, len(x)))
    return mu.cpu(), logvar.cpu()


@torch.no_grad()
def decode(ck: Checkpoint, z: torch.Tensor | np.ndarray, label: str | int | None = None) -> torch.Tensor:
    """Latent codes (B, *latent_shape) or one code -> spectrograms (B, F, T) in [0, 1]; a conditional model
    makes them as clips of ``label``."""
    z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(-1, *ck.model_cfg.latent_shape)
    return ck.model.decode(z.to(ck.device), _labels(ck, label, len(z)))[:, 0].cpu()


def relabel(ck: Checkpoint, x: torch.Tensor | np.ndarray, source: str | int, target: str | int) -> torch.Tensor:
    """Spectrograms (B, F, T) of label ``source`` -> the same clips as label ``target`` (B, F, T): encoded
    with their own label, decoded with the other, so the style (voice, timing) stays and the label changes."""
    return decode(ck, encode(ck, x, source)[0], target)


CHUNK_WINDOWS = 32  # temporal models: windows reconstructed in one piece (about 95 s of music)


def _through(ck: Checkpoint, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """x (B, 1, F, T) through the posterior mean, with labels ``y`` (B,) when given: (B, 1, F, T)."""
    if y is None:
        return ck.model.decode(ck.model.encode(x)[0])
    return ck.model.decode(ck.model.encode(x, y)[0], y)


@torch.no_grad()
def _reconstruct_joined(ck: Checkpoint, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Consecutive windows (W, 1, F, T) of one signal through a temporal model as one spectrogram
    (1, 1, F, W * T): no seams between windows. Longer runs go in chunks of CHUNK_WINDOWS windows that
    overlap by one window, cross-faded linearly over it (overlap-add). ``y``: a conditional model's label
    (1,) long for the signal. Returns (W, F, T)."""
    w, _, f, t = x.shape
    joined = x.permute(1, 2, 0, 3).reshape(1, 1, f, w * t)  # (1, 1, F, W*T): windows side by side
    if w <= CHUNK_WINDOWS:
        out = _through(ck, joined, y)
    else:
        out, weight = torch.zeros_like(joined), torch.zeros(w * t, device=x.device)
        ramp = torch.linspace(0, 1, t + 2, device=x.device)[1:-1]  # (T,) the fade over an overlap
        for start in range(0, w - 1, CHUNK_WINDOWS - 1):
            a, b = start * t, min(w, start + CHUNK_WINDOWS) * t
            fade = torch.ones(b - a, device=x.device)
            if start:
                fade[:t] = ramp
            if b < w * t:
                fade[-t:] = 1 - ramp
            piece = _through(ck, joined[..., a:b], y)  # (1, 1, F, b - a)
            out[..., a:b] += piece * fade
            weight[a:b] += fade
            if b == w * t:
                break
        out = out / weight.clamp_min(1e-8)
    return out.reshape(f, w, t).permute(1, 0, 2)  # (W, F, T)


def reconstruct(ck: Checkpoint, x: torch.Tensor | np.ndarray, joined: bool = True,
                label: str | int | None = None) -> torch.Tensor:
    """Spectrograms (B, F, T) -> their reconstructions through the posterior mean (B, F, T).

    A temporal model takes the B windows, when ``joined``, as consecutive pieces of one signal
    (as :func:`analyse` cuts it) and reconstructs them in one piece, without seams between them.
    A conditional model encodes and decodes them as clips of ``label``.
    """
    if joined and ck.model_cfg.kind == "temporal":
        return _reconstruct_joined(ck, _model_input(x, ck), _labels(ck, label, 1)).cpu()
    return decode(ck, encode(ck, x, label)[0], label)


def label_gaussians_of(ck: Checkpoint) -> LatentStats | None:
    """The latent statistics whose label Gaussians :func:`sample` draws a label's codes from (a conditional
    model with global codes and no learned prior, whose statistics hold them); None otherwise."""
    if ck.prior is not None or ck.path is None or not ck.model_cfg.labels:
        return None
    stats = load_latent_stats(ck.path, ck.model_cfg.latent_shape)
    return stats if stats is not None and stats.label_chol is not None else None


MAX_SAMPLE_COUNT = 10_000  # codes one sample() call draws (the CLI's --count): bounded before allocating


def sample(ck: Checkpoint, n: int, temperature: float = 1.0, seed: int | None = None,
           label: str | int | None = None) -> torch.Tensor:
    """``n`` codes from the prior, (n, *latent_shape): a temporal model's learned prior over sequences
    when it has one (vae.prior; ``temperature`` scales each frame's deviation), else N(0, temperature^2 I).

    A conditional model samples the codes of clips of ``label`` (None: no label in particular): from its
    learned prior, which is conditional too, or, for global codes, from the label's Gaussian in its latent
    statistics (vae.latents.label_gaussians) when they have one. Decode them with the same label
    (``decode(ck, z, label)``)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLE_COUNT:
        raise InputError(f"the number of samples must be 1 to {MAX_SAMPLE_COUNT:,}, got {n!r}")
    row = None if label is None else label_index(ck.model_cfg.labels, label)  # an unknown label: refused here
    stats = label_gaussians_of(ck) if row is not None else None
    if stats is not None and str(label) in stats.label_names:
        return sample_label_gaussian(stats, str(label), n, temperature, seed)
    if ck.prior is not None:
        from .prior import MAX_SAMPLES, sample_prior

        row = row if ck.prior.cfg.n_labels else None  # a prior fitted before priors took labels: shared by them
        # a call draws at most MAX_SAMPLES sequences: more in chunks, chunk k seeded with seed + k
        return torch.cat([sample_prior(ck.prior, min(MAX_SAMPLES, n - s), ck.model_cfg.latent_shape[1], temperature,
                                       None if seed is None else seed + k, label=row).cpu()
                          for k, s in enumerate(range(0, n, MAX_SAMPLES))])
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(n, *ck.model_cfg.latent_shape, generator=g) * temperature


MAX_STEPS = 32  # interpolation steps: each is decoded and turned into sound


def interpolate(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` codes on the straight line from z_a to z_b (ends included), (steps, *z_a.shape).
    Sequences (D, T') are interpolated frame by frame."""
    if not 2 <= steps <= MAX_STEPS:
        raise InputError(f"interpolation takes 2 to {MAX_STEPS} steps, got {steps}")
    if z_a.numel() != z_b.numel():
        raise InputError(f"cannot interpolate between codes of {tuple(z_a.shape)} and {tuple(z_b.shape)} numbers")
    t = torch.linspace(0, 1, steps)[:, None]
    line = (1 - t) * z_a.reshape(1, -1) + t * z_b.reshape(1, -1)  # (steps, numel)
    shape = z_a.shape[1:] if z_a.dim() > 1 and z_a.shape[0] == 1 else z_a.shape  # a batch of one: its code
    return line.reshape(steps, *shape)


@dataclass
class Analysed:
    """An audio signal cut into model inputs, with what is needed to undo the cut."""

    specs: torch.Tensor  # (W, F, T) normalised windows
    ranges: list[tuple[float, float]]  # per window (lo, hi) dB mapped to 0 and 1
    gain: float  # input was multiplied by this before analysis
    length: int  # samples of the input at the model's rate


def analyse(ck: Checkpoint, wave: np.ndarray) -> Analysed:
    """A mono signal (n,) at the model's rate -> normalised windows of the model's duration."""
    cfg = ck.spec
    gain = 1.0 / peak(wave) if cfg.peak_normalise and not is_silent(wave) else 1.0
    n = cfg.n_samples
    # pad to whole windows so every sample is analysed (windows() alone drops a short tail)
    wins = windows(fit_length(wave * gain, max(1, math.ceil(len(wave) / n)) * n), n, "all")
    db = log_spectrogram(np.stack([w for _, w in wins]), cfg)  # (W, F, T)
    specs, ranges = [], []
    for w_db in db:
        lo, hi = db_range(w_db, cfg)
        if not hi > lo:  # a silent window under per-clip normalisation: keep it silent
            specs.append(torch.zeros_like(w_db))
            ranges.append((lo - cfg.top_db, lo))
        else:
            specs.append(normalise(w_db, lo, hi))
            ranges.append((lo, hi))
    return Analysed(torch.stack(specs), ranges, gain, len(wave))


def analyse_file(ck: Checkpoint, path: str) -> Analysed:
    return analyse(ck, load_audio(path, ck.spec.sample_rate, min_samples=ck.spec.n_fft))


def to_wave(ck: Checkpoint, x: torch.Tensor, ranges: list[tuple[float, float]] | None = None,
            phase: str | None = None, n_iter: int | None = None) -> np.ndarray:
    """Normalised spectrograms (W, F, T) -> one signal (W * n_samples,), windows joined.

    ``ranges`` gives each window's dB range; without it the checkpoint's global range is used
    (for sampled or interpolated spectrograms that have no source clip). A model trained with
    per-clip normalisation has no global range and uses a typical one (-60 .. 0 dB re peak).
    """
    x = x.reshape(-1, *ck.spec.shape)
    if ranges is None:
        ranges = [display_range(ck)] * len(x)
    db = torch.stack([denormalise(w, lo, hi) for w, (lo, hi) in zip(x, ranges)])
    wave = to_audio(db, ck.spec, phase=phase, n_iter=n_iter).reshape(-1).numpy()
    if ck.spec.peak_normalise:
        wave = limit_peak(wave)  # never clip on playback
    return wave.astype(np.float32)


def display_range(ck: Checkpoint) -> tuple[float, float]:
    """The dB range (lo, hi) that 0 and 1 of a decoded spectrogram stand for when it has no source
    clip: the store's global range, or a typical per-clip range for per-clip normalisation."""
    if ck.spec.normalisation == "global" and ck.spec.ref_db is not None:
        return ck.spec.ref_db - ck.spec.top_db, ck.spec.ref_db
    lo, hi = ck.meta.get("typical_range", (-40.0, 30.0))
    return float(lo), float(hi)


@dataclass
class Rendered:
    """A decoded code: spectrogram in dB (F, T), audio (n,), and the dB scale to draw it with."""

    db: np.ndarray
    wave: np.ndarray
    vmin: float
    vmax: float


def render_many(ck: Checkpoint, z: torch.Tensor, phase: str | None = None,
                n_iter: int | None = None, label: str | int | None = None) -> list[Rendered]:
    """Decode codes (B, *latent_shape) (a conditional model: as ``label``) to spectrograms in dB and sound,
    on the model's display range."""
    lo, hi = display_range(ck)
    return [Rendered(denormalise(x, lo, hi).numpy(), to_wave(ck, x, [(lo, hi)], phase=phase, n_iter=n_iter), lo, hi)
            for x in decode(ck, z, label)]  # decode: (B, F, T)


def render(ck: Checkpoint, z: torch.Tensor, phase: str | None = None, n_iter: int | None = None,
           label: str | int | None = None) -> Rendered:
    """Decode one code (*latent_shape) (a conditional model: as ``label``) to a spectrogram and audio."""
    return render_many(ck, z, phase, n_iter, label)[0]


def encode_wave(ck: Checkpoint, wave: np.ndarray, sample_rate: int, label: str | int | None = None) -> torch.Tensor:
    """Posterior mean (*latent_shape) of the first window of ``wave`` (n,), at the model's rate (a conditional
    model: read as a clip of ``label``)."""
    if sample_rate != ck.spec.sample_rate:
        raise InputError(f"clip is at {sample_rate} Hz, the model at {ck.spec.sample_rate} Hz")
    return encode(ck, analyse(ck, wave).specs[:1], label)[0][0]


def start_code(ck: Checkpoint, kind: str, *, temperature: float = 1.0, seed: int | None = None,
               wave: np.ndarray | None = None, sample_rate: int | None = None,
               label: str | int | None = None) -> torch.Tensor:
    """Where exploring starts: ``"origin"`` (the prior's centre), ``"prior"`` (a sample at
    ``temperature``) or ``"clip"`` (the encoding of ``wave``; a conditional model reads it as ``label``).
    Returns a code (*latent_shape)."""
    if kind == "origin":
        return torch.zeros(ck.model_cfg.latent_shape)
    if kind == "prior":
        if not temperature > 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        return sample(ck, 1, temperature, seed, label)[0]
    if kind == "clip":
        if wave is None:
            raise InputError("no clip to start from: pick an example, upload a file or click the map")
        return encode_wave(ck, wave, sample_rate or ck.spec.sample_rate, label)
    raise InputError(f"unknown start {kind!r}; use 'origin', 'prior' or 'clip'")


def reconstruct_audio(ck: Checkpoint, wave: np.ndarray, phase: str | None = None, n_iter: int | None = None,
                      label: str | int | None = None) -> tuple[np.ndarray, Analysed, torch.Tensor]:
    """Signal (n,) -> (reconstructed signal (n,) at the input's level, analysis, recon specs); a conditional
    model reads and remakes it as ``label``."""
    a = analyse(ck, wave)
    x_hat = reconstruct(ck, a.specs, label=label)
    out = to_wave(ck, x_hat, a.ranges, phase, n_iter)[: a.length] / a.gain
    return out.astype(np.float32), a, x_hat
