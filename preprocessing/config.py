"""Preprocessing configuration: one dataclass and the named presets.

A :class:`SpectrogramConfig` fully describes how audio becomes a model input and back:
sample rate, clip duration, STFT frame and hop, and the normalisation. It travels with every
dataset store and every checkpoint (as JSON), so a model always decodes with the settings it
was trained on.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from .errors import InputError

Normalisation = Literal["global", "clip"]
Windowing = Literal["all", "first"]
PhaseMethod = Literal["griffinlim", "zero"]
NORMALISATIONS: tuple[str, ...] = typing.get_args(Normalisation)
WINDOWINGS: tuple[str, ...] = typing.get_args(Windowing)
PHASE_METHODS: tuple[str, ...] = typing.get_args(PhaseMethod)

C = TypeVar("C", bound="DictConfig")


class ConfigError(InputError):
    """A parameter is out of range; raised before any work starts."""


# Bounds on every size a user or a file can set, checked before memory is allocated from them. Wide
# enough for any real use: studio audio is at most 192 kHz; the study's longest clip is 5.94 s and
# GTZAN's 30 s; Griffin-Lim converges by a few hundred iterations.
LIMITS: dict[str, tuple[float, float]] = {
    "sample_rate": (1000, 192_000),  # Hz
    "duration": (0.0, 60.0),  # seconds per clip (exclusive lower bound)
    "n_fft": (16, 16_384),  # samples
    "hop_length": (1, 16_384),  # samples
    "top_db": (0.0, 200.0),  # dB (exclusive lower bound)
    "griffinlim_iters": (1, 1000),
}
MAX_CLIP_VALUES = 2**24  # values in one clip's spectrogram: 64 MiB of float32 (music: 512 x 256 = 2**17)


def _from_json(tp: Any, value: Any) -> Any:
    """``value`` as read from JSON, with lists turned back into tuples where ``tp`` is a tuple type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # e.g. tuple[int, ...] | None
        fits = [a for a in args if typing.get_origin(a) is tuple]
        return _from_json(fits[0], value) if fits and isinstance(value, list | tuple) else value
    if origin is not tuple or not isinstance(value, list | tuple):
        return value
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
        return tuple(_from_json(args[0], v) for v in value)
    return tuple(_from_json(a, v) for a, v in zip(args, value, strict=False)) if args else tuple(value)


class DictConfig:
    """JSON round trip shared by the config dataclasses (spectrogram, model, training).

    ``to_dict`` gives plain values; ``from_dict`` rejects unknown keys with a :class:`ConfigError`
    naming them, restores tuples from JSON lists, fills absent keys from the defaults (except those in
    ``required``) and validates.
    """

    what: ClassVar[str] = "config"  # names the parameters in messages: "unknown <what> parameters"
    required: ClassVar[tuple[str, ...]] = ()  # keys that must be present (no default is safe)

    def validate(self: C) -> C:
        return self

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` applied (``None`` values are ignored) and validated."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown {self.what} parameters: {unknown}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{cls.what} parameters must be a dict, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown {cls.what} parameters: {unknown}")
        missing = [k for k in cls.required if k not in d]
        if missing:
            raise ConfigError(f"missing {cls.what} parameters: {missing}")
        return cls(**{k: _from_json(hints[k], v) for k, v in d.items()}).validate()


@dataclass(frozen=True)
class SpectrogramConfig(DictConfig):
    """How a clip of audio becomes a normalised log-magnitude spectrogram.

    Shapes: a clip has ``n_samples`` samples at ``sample_rate`` Hz; its spectrogram has
    ``n_freq = n_fft // 2`` bins (the Nyquist bin is dropped, as in the study) and
    ``n_frames = 1 + n_samples // hop_length`` frames (centred STFT).
    """

    what: ClassVar[str] = "spectrogram"

    sample_rate: int = 8000  # Hz
    duration: float = 0.76  # seconds per clip / window
    n_fft: int = 256  # STFT frame length, samples
    hop_length: int = 64  # samples between frames
    # "global": dB mapped to [0, 1] with one range for the whole dataset (ref_db - top_db .. ref_db),
    # so any decoded spectrogram is turned back into sound without per-clip values.
    # "clip": the study's per-clip min-max; decoding needs that clip's min and max.
    normalisation: Normalisation = "global"
    top_db: float = 80.0  # dynamic range kept below the loudest bin, dB
    ref_db: float | None = None  # loudest dB of the training clips; set when a store is built
    peak_normalise: bool = True  # scale each file to peak 1.0 before analysis
    windowing: Windowing = "all"  # "all": consecutive windows of long files; "first": the study's crop
    phase: PhaseMethod = "griffinlim"  # default inversion: "griffinlim" or the study's "zero" phase
    griffinlim_iters: int = 64

    @property
    def n_samples(self) -> int:
        return round(self.duration * self.sample_rate)

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2

    @property
    def n_frames(self) -> int:
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """(n_freq, n_frames) of one spectrogram."""
        return (self.n_freq, self.n_frames)

    def validate(self) -> SpectrogramConfig:
        """Raise :class:`ConfigError` naming the first bad parameter; return self. Every size is bounded
        (see ``LIMITS``) before anything is allocated from it."""
        for name in ("sample_rate", "n_fft", "hop_length", "griffinlim_iters"):
            lo, hi = LIMITS[name]
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, got {v!r}")
        for name in ("duration", "top_db"):
            lo, hi = LIMITS[name]
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo < v <= hi:  # NaN and inf fail too
                raise ConfigError(f"{name} must be above {lo} and at most {hi}, got {v!r}")
        if self.ref_db is not None and (isinstance(self.ref_db, bool) or not isinstance(self.ref_db, int | float)
                                        or not math.isfinite(self.ref_db)):
            raise ConfigError(f"ref_db must be a finite number of dB, got {self.ref_db!r}")
        if self.n_freq * self.n_frames > MAX_CLIP_VALUES:
            raise ConfigError(
                f"one clip would be a {self.n_freq} x {self.n_frames} spectrogram "
                f"({self.n_freq * self.n_frames * 4 / 2**20:.0f} MiB); the limit is {MAX_CLIP_VALUES * 4 / 2**20:.0f} "
                "MiB a clip: use a shorter duration, a larger hop or a smaller frame")
        if self.hop_length > self.n_fft:
            raise ConfigError(
                f"hop_length ({self.hop_length}) must not exceed the frame n_fft ({self.n_fft})"
            )
        if self.n_samples < self.n_fft:
            raise ConfigError(
                f"duration {self.duration}s gives {self.n_samples} samples, fewer than one "
                f"STFT frame ({self.n_fft}); use a longer duration or a smaller frame"
            )
        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.windowing not in WINDOWINGS:
            raise ConfigError(f"windowing must be one of {WINDOWINGS}, got {self.windowing!r}")
        if self.phase not in PHASE_METHODS:
            raise ConfigError(f"phase must be one of {PHASE_METHODS}, got {self.phase!r}")
        return self


# The study's settings are kept exactly ("study-*"); the defaults were chosen by measurement
# (see README, "Why these defaults"): FSDD is recorded at 8 kHz, so digits work at 8 kHz (no
# empty upper 60% of the spectrogram); 75% frame overlap lets Griffin-Lim recover phase.
PRESETS: dict[str, SpectrogramConfig] = {
    "digits": SpectrogramConfig(windowing="first"),  # one utterance per clip
    "music": SpectrogramConfig(sample_rate=22050, duration=2.97, n_fft=1024, hop_length=256),
    "study-digits": SpectrogramConfig(
        sample_rate=22050, duration=0.74, n_fft=512, hop_length=256, normalisation="clip",
        peak_normalise=False, windowing="first", phase="zero",
    ),
    "study-music": SpectrogramConfig(
        sample_rate=22050, duration=5.94, n_fft=1024, hop_length=512, normalisation="clip",
        peak_normalise=False, windowing="first", phase="zero",
    ),
}
PRESETS["study"] = PRESETS["study-digits"]


def preset(name: str) -> SpectrogramConfig:
    """The named preset; raises :class:`ConfigError` listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
