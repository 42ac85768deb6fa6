"""Measurable properties of a sound, from its dB magnitude spectrogram.

Every measure takes a spectrogram ``db`` (..., F, T) in dB of magnitude (20 log10 |X|, as
:func:`preprocessing.spectrogram.log_spectrogram` gives and the decoder's output denormalised), with
F = n_fft // 2 bins at k * sample_rate / n_fft Hz, and returns one number per spectrogram (...,).
They are cheap and deterministic (no phase, no resynthesis), so the same numbers come from a clip's
spectrogram and from a decoded code.

"Active" frames are those within ``ACTIVE_DB`` of the clip's loudest frame: the sound, not the
silence around it. Loudness is relative to the spectrogram's 0 dB (a store's dB scale).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

ACTIVE_DB = 30.0  # a frame is active within this many dB of the loudest frame
F0_RANGE = (60.0, 1000.0)  # Hz searched for a fundamental
F0_STEPS_PER_OCTAVE = 48  # the candidate grid (a quarter of a semitone)
F0_HARMONICS = 12  # harmonics summed per candidate
F0_DECAY = 0.8  # weight of harmonic h is F0_DECAY ** (h - 1): favours the true f0 over its subharmonics


def _power(db: torch.Tensor) -> torch.Tensor:
    return torch.pow(10.0, db.double() / 10.0)


def frame_db(db: torch.Tensor) -> torch.Tensor:
    """Each frame's mean power in dB, (..., T)."""
    return 10.0 * torch.log10(_power(db).mean(-2).clamp_min(1e-30))


def active_frames(db: torch.Tensor, within_db: float = ACTIVE_DB) -> torch.Tensor:
    """Boolean (..., T): frames within ``within_db`` of the clip's loudest frame."""
    e = frame_db(db)
    return e >= e.amax(-1, keepdim=True) - within_db


def loudness(db: torch.Tensor) -> torch.Tensor:
    """RMS level in dB (10 log10 of the mean power over all bins and frames), (...,)."""
    return (10.0 * torch.log10(_power(db).mean((-2, -1)).clamp_min(1e-30))).float()


def bin_hz(n_freq: int, sample_rate: int) -> torch.Tensor:
    """The frequency of each of the ``n_freq`` bins (Nyquist dropped: n_fft = 2 n_freq), (F,) Hz."""
    return torch.arange(n_freq, dtype=torch.float64) * sample_rate / (2 * n_freq)


def centroid(db: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Spectral centroid in Hz: the magnitude-weighted mean frequency of the clip's time-averaged
    magnitude spectrum (loud frames weigh more than quiet ones), (...,)."""
    mag = torch.pow(10.0, db.double() / 20.0).mean(-1)  # (..., F)
    f = bin_hz(db.shape[-2], sample_rate)
    return ((mag * f).sum(-1) / mag.sum(-1).clamp_min(1e-30)).float()


def _active_mean(x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    return (x * active).sum(-1) / active.sum(-1).clamp_min(1)


def flatness(db: torch.Tensor) -> torch.Tensor:
    """Spectral flatness in dB: 10 log10(geometric / arithmetic mean of power) per frame, averaged over the
    active frames, (...,). 0 dB for white noise's ideal flat spectrum, strongly negative for a tone."""
    p = _power(db).clamp_min(1e-30)  # (..., F, T)
    per_frame = 10.0 * (torch.log10(p).mean(-2) - torch.log10(p.mean(-2)))  # (..., T)
    return _active_mean(per_frame, active_frames(db)).float()


def active_share(db: torch.Tensor, within_db: float = ACTIVE_DB) -> torch.Tensor:
    """The share of frames within ``within_db`` of the loudest frame, in [0, 1] (...,): how much of the
    window the sound lasts."""
    return active_frames(db, within_db).double().mean(-1).float()


def f0_candidates(fmin: float = F0_RANGE[0], fmax: float = F0_RANGE[1],
                  per_octave: int = F0_STEPS_PER_OCTAVE) -> torch.Tensor:
    """A geometric grid of candidate fundamentals from ``fmin`` to ``fmax`` Hz, (C,)."""
    n = math.floor(per_octave * math.log2(fmax / fmin)) + 1
    return fmin * torch.pow(2.0, torch.arange(n, dtype=torch.float64) / per_octave)


def pitch_salience(db: torch.Tensor, sample_rate: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Harmonic-sum salience (..., C, T) of each candidate fundamental in each frame.

    The salience of f0 is sum over h of F0_DECAY^(h-1) S(h f0), with S the frame's magnitude relative to its
    peak (linear, not dB: on compressed spectra, dense subharmonic candidates collect the smeared energy
    between harmonics), read between bins by linear interpolation (harmonics above the top bin count 0).
    Reading the harmonics between bins gives a fundamental finer than the bin spacing, which spectrograms
    of a few hundred bins need (8 kHz over 128 bins: 31 Hz a bin).
    """
    cand = f0_candidates() if candidates is None else candidates.double()
    f = db.shape[-2]
    s = torch.pow(10.0, (db - db.amax(-2, keepdim=True)).float() / 20.0)  # (..., F, T) magnitude re the peak
    h = torch.arange(1, F0_HARMONICS + 1, dtype=torch.float64)
    pos = (cand[:, None] * h[None, :]) * (2 * f) / sample_rate  # (C, H) fractional bin of each harmonic
    inside = pos <= f - 1
    pos = pos.clamp(max=f - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=f - 1)
    frac = (pos - lo).float()
    w = ((F0_DECAY ** (h - 1))[None, :] * inside).float()  # (C, H)
    flat_lo, flat_hi = lo.reshape(-1), hi.reshape(-1)
    read = s[..., flat_lo, :] * (1 - frac.reshape(-1, 1)) + s[..., flat_hi, :] * frac.reshape(-1, 1)  # (..., C*H, T)
    read = read.reshape(*s.shape[:-2], *pos.shape, s.shape[-1])  # (..., C, H, T)
    return (read * w[..., None]).sum(-2)  # (..., C, T)


def pitch(db: torch.Tensor, sample_rate: int, candidates: torch.Tensor | None = None) -> torch.Tensor:
    """Fundamental frequency in Hz, (...,): per active frame the candidate (F0_RANGE, quarter-semitone grid)
    of highest harmonic-sum salience (:func:`pitch_salience`), refined between grid points by a parabola
    through its neighbours, then the median over the active frames.

    Why a harmonic sum on the spectrogram rather than a time-domain estimator (YIN,
    ``torchaudio.functional.detect_pitch_frequency``): it reads the decoder's output directly, needs no
    resynthesis (whose random Griffin-Lim phase would make it non-deterministic), and sub-bin reading of up to
    12 harmonics resolves f0 on coarse spectrograms; decaying harmonic weights keep it off subharmonics.
    """
    cand = f0_candidates() if candidates is None else candidates.double()
    sal = pitch_salience(db, sample_rate, cand).double()  # (..., C, T)
    i = sal.argmax(-2, keepdim=True).clamp(1, len(cand) - 2)  # (..., 1, T), a grid point with two neighbours
    a, b, c = (sal.gather(-2, i + d)[..., 0, :] for d in (-1, 0, 1))
    shift = (0.5 * (a - c) / (a - 2 * b + c).clamp(max=-1e-12)).clamp(-0.5, 0.5)  # parabola's peak, in steps
    step = math.log2(float(cand[1] / cand[0]))
    best = cand[i[..., 0, :]] * torch.pow(2.0, shift * step)  # (..., T) Hz
    active = active_frames(db)
    lead = best.shape[:-1]
    flat_best, flat_active = best.reshape(-1, best.shape[-1]), active.reshape(-1, active.shape[-1])
    out = torch.stack([row[a].median() if a.any() else row.median() for row, a in zip(flat_best, flat_active)])
    return out.reshape(lead).float()


@dataclass(frozen=True)
class Property:
    """One measurable property: its name, unit, the words for its two ends, and its measure."""

    name: str  # e.g. "centroid"
    title: str  # what it is, e.g. "spectral centroid"
    unit: str  # e.g. "Hz"
    low: str  # the word for less, e.g. "darker"
    high: str  # the word for more, e.g. "brighter"
    measure: Callable[[torch.Tensor, int], torch.Tensor]  # (db (..., F, T), sample_rate) -> (...,)
    scale: float = 1.0  # the slider shows the property times this (e.g. 100 for a share in percent)
    shown_unit: str = ""  # the slider's unit when scaled ("" = ``unit``)

    @property
    def slider_unit(self) -> str:
        return self.shown_unit or self.unit


PROPERTIES: dict[str, Property] = {p.name: p for p in (
    Property("loudness", "RMS level", "dB", "quieter", "louder", lambda db, sr: loudness(db)),
    Property("centroid", "spectral centroid", "Hz", "darker", "brighter", centroid),
    Property("pitch", "fundamental frequency", "Hz", "lower", "higher", pitch),
    Property("flatness", "spectral flatness", "dB", "tonal", "noisy", lambda db, sr: flatness(db)),
    Property("length", "share of active frames", "fraction", "shorter", "longer", lambda db, sr: active_share(db),
             scale=100.0, shown_unit="% of the window"),
)}


def measure_all(db: torch.Tensor, sample_rate: int, names: list[str] | None = None,
                batch: int = 16) -> dict[str, torch.Tensor]:
    """Every property (or those ``names``) of spectrograms ``db`` (N, F, T): name -> (N,) values, measured
    ``batch`` spectrograms at a time (the pitch salience is (batch, C, H, T) numbers)."""
    names = list(PROPERTIES) if names is None else names
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for s in range(0, len(db), batch):
        chunk = db[s:s + batch]
        for n in names:
            out[n].append(PROPERTIES[n].measure(chunk, sample_rate))
    return {n: torch.cat(v) if v else torch.zeros(0) for n, v in out.items()}
