"""Model and training configuration: dataclasses and the architecture presets.

``study`` reproduces the study (after the well-known Keras sound-VAE tutorial): five blocks of
conv -> ReLU -> batch norm with 512..32 filters, latent 128, loss 1e6 x MSE + KL, Adam 5e-4.
``default`` is our measured choice: few filters at full resolution and more as resolution
drops (the study does the reverse, which puts almost all its compute at full resolution),
conv -> batch norm -> LeakyReLU, a 64-dimensional latent, and a reconstruction term ten times
the per-pixel sum. See README "Architecture comparison" for the numbers behind it.
``temporal`` (issue #11) keeps a time axis in the latent, as RAVE, DAC and the KL autoencoders of
latent diffusion do: frequency is folded into channels, time is downsampled by the product of the
time strides, and each clip becomes a sequence of ``latent_dim``-number frames (vae.model).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from preprocessing.config import MAX_CLIP_VALUES, PRESETS, ConfigError, DictConfig, SpectrogramConfig

Arch = Literal["default", "study", "temporal"]
Activation = Literal["relu", "leaky_relu"]
Kind = Literal["global", "temporal"]  # one code per clip, or a sequence of codes along time
Norm = Literal["batch", "weight", "group"]
ARCHS: tuple[str, ...] = typing.get_args(Arch)
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)
KINDS: tuple[str, ...] = typing.get_args(Kind)
NORMS: tuple[str, ...] = typing.get_args(Norm)
# fields added with the temporal kind, at the values every earlier (global) model had: left out of
# config.json when they have them, so a global model's config is what it was before they existed
GLOBAL_FIELDS = {"kind": "global", "res_blocks": 0, "norm": "batch"}
# fields added with conditioning (issue #14), left out of config.json for an unconditional model (no labels)
CONDITION_FIELDS = ("labels", "label_dim", "label_encoder")
MAX_LABELS = 1024  # label vocabulary of a conditional model (embedding rows)
MAX_LABEL_CHARS = 200


MAX_WIDTH = 4096  # latent numbers per code or frame, and filters per layer: 16x the widest preset


def _check_ints(cfg: DictConfig, bounds: dict[str, tuple[int, int]]) -> None:
    """:class:`ConfigError` unless each named field is a whole number within its (lo, hi) bounds."""
    for name, (lo, hi) in bounds.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name} must be a whole number, got {v!r}")
        if v < lo:
            raise ConfigError(f"{name} must be at least {lo}, got {v}")
        if v > hi:
            raise ConfigError(f"{name} must be at most {hi:,}, got {v:,}")


@dataclass(frozen=True)
class ModelConfig(DictConfig):
    """A convolutional VAE over (1, n_freq, n_frames) spectrograms in [0, 1].

    ``kind="global"``: 2-D convolutions with (freq, time) ``strides`` down to one ``latent_dim`` code per
    clip. ``kind="temporal"``: frequency folded into channels, 1-D convolutions along time with the time
    element of each stride (the frequency element must be 1), ``res_blocks`` residual blocks per stage;
    the latent is (latent_dim, n_frames / time_ratio).
    """

    what: ClassVar[str] = "model"
    # every field: a default standing in for a missing one could build another network (latent_dim's
    # default was once 32)
    required: ClassVar[tuple[str, ...]] = (
        "n_freq", "n_frames", "channels", "strides", "decoder_channels", "kernel", "latent_dim", "activation",
        "norm_first")

    n_freq: int = 128
    n_frames: int = 96
    channels: tuple[int, ...] = (32, 64, 128, 256)  # encoder filters, block by block
    strides: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (2, 2))  # (freq, time)
    decoder_channels: tuple[int, ...] = (128, 64, 32)  # transposed-conv filters before the output layer
    kernel: int = 3
    latent_dim: int = 64
    activation: Activation = "leaky_relu"
    norm_first: bool = True  # conv -> norm -> act (True) or the study's conv -> act -> norm
    kind: Kind = "global"
    res_blocks: int = 0  # temporal: residual blocks per stage
    norm: Norm = "batch"  # global: batch; temporal: weight (weight norm) or group (GroupNorm, one group)
    # conditioning (issue #14): the label vocabulary, in the order of the embedding rows; () = unconditional
    labels: tuple[str, ...] = ()
    label_dim: int = 16  # numbers per label embedding, concatenated to z (and to the encoder's input)
    label_encoder: bool = True  # the encoder sees the label too (a conditional VAE's q(z | x, y))

    @property
    def n_labels(self) -> int:
        """Rows of the label embedding; 0 for an unconditional model."""
        return len(self.labels)

    @property
    def time_ratio(self) -> int:
        """Frames of spectrogram per latent frame (temporal); the product of the time strides."""
        return math.prod(st for _, st in self.strides)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one clip's code: (latent_dim,) or (latent_dim, n_frames / time_ratio)."""
        if self.kind == "temporal":
            return (self.latent_dim, self.n_frames // self.time_ratio)
        return (self.latent_dim,)

    @property
    def bottleneck(self) -> tuple[int, int, int]:
        """(C, F, T) of the last encoder feature map."""
        f, t = self.n_freq, self.n_frames
        for sf, st in self.strides:
            f, t = f // sf, t // st
        return (self.channels[-1], f, t)

    def validate(self) -> ModelConfig:
        _check_ints(self, {"n_freq": (1, 16_384), "n_frames": (1, 2**20), "latent_dim": (1, MAX_WIDTH),
                           "kernel": (1, 31), "res_blocks": (0, 16)})
        if self.n_freq * self.n_frames > MAX_CLIP_VALUES:
            raise ConfigError(f"a {self.n_freq} x {self.n_frames} input is larger than the limit of "
                              f"{MAX_CLIP_VALUES:,} values a clip")
        if not self.channels or len(self.channels) != len(self.strides):
            raise ConfigError("channels and strides must be non-empty and of equal length")
        if len(self.channels) > 16:
            raise ConfigError(f"at most 16 blocks, got {len(self.channels)}")
        widths = (*self.channels, *self.decoder_channels)
        steps = [v for st in self.strides for v in (st if isinstance(st, tuple) and len(st) == 2 else (None,))]
        if not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_WIDTH for c in widths):
            raise ConfigError(f"channels and decoder_channels must be whole numbers from 1 to {MAX_WIDTH}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8 for v in steps):
            raise ConfigError("strides must be (freq, time) pairs of whole numbers from 1 to 8")
        if len(self.decoder_channels) != len(self.channels) - 1:
            raise ConfigError("decoder_channels must have one entry fewer than channels")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"kernel must be odd (padding kernel // 2 keeps the shapes mirrored), got {self.kernel}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be 'relu' or 'leaky_relu', got {self.activation!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "global" and (self.norm != "batch" or self.res_blocks):
            raise ConfigError("a global model uses batch norm and no residual blocks")
        if self.kind == "temporal":
            if self.norm not in ("weight", "group"):
                raise ConfigError(f"a temporal model's norm must be 'weight' or 'group', got {self.norm!r}")
            if self.res_blocks < 0 or any(sf != 1 for sf, _ in self.strides):
                raise ConfigError("a temporal model needs res_blocks >= 0 and frequency strides of 1")
        if not isinstance(self.labels, tuple) or not all(
                isinstance(x, str) and 0 < len(x) <= MAX_LABEL_CHARS for x in self.labels):
            raise ConfigError(f"labels must be a list of names of 1 to {MAX_LABEL_CHARS} characters")
        if len(self.labels) > MAX_LABELS or len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels must be at most {MAX_LABELS} distinct names, got {len(self.labels)}")
        _check_ints(self, {"label_dim": (1, MAX_WIDTH)})
        if not isinstance(self.label_encoder, bool):
            raise ConfigError(f"label_encoder must be true or false, got {self.label_encoder!r}")
        fs = ts = 1
        for sf, st in self.strides:
            fs, ts = fs * sf, ts * st
        if self.n_freq % fs or self.n_frames % ts:
            raise ConfigError(
                f"spectrogram {self.n_freq}x{self.n_frames} cannot be mirrored by strides "
                f"{list(self.strides)}: n_freq must divide by {fs} and n_frames by {ts}; "
                f"adjust duration/hop (n_frames = 1 + duration*sample_rate // hop) or n_fft"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`DictConfig.to_dict`, without the temporal-era fields at their global values, nor the
        conditioning fields for an unconditional model: older config.json files stay as they were."""
        d = super().to_dict()
        if d["kind"] == "global":
            d = {k: v for k, v in d.items() if k not in GLOBAL_FIELDS or v != GLOBAL_FIELDS[k]}
        if not d["labels"]:
            d = {k: v for k, v in d.items() if k not in CONDITION_FIELDS}
        return d


def _temporal(n_freq: int, n_frames: int) -> ModelConfig:
    """The temporal preset: time halved in one stage, a residual block at each end, GroupNorm.

    Chosen by measurement (see README, "The temporal architecture"): on the music store, over the
    first 150 steps, one 2x stage with 64 numbers per latent frame reached a lower error sooner than
    two 2x stages with 32 or 128 (0.0095 against 0.0112 and 0.0112 per-pixel MSE), and GroupNorm
    than weight norm (0.0104 against 0.0158 at 150 steps, two stages).
    """
    width = 256 if n_freq >= 256 else 128
    return ModelConfig(n_freq=n_freq, n_frames=n_frames, channels=(width,), strides=((1, 2),),
                       decoder_channels=(), kernel=5, latent_dim=64 if n_freq >= 256 else 32,
                       kind="temporal", res_blocks=1, norm="group")


def model_config(arch: str, shape: tuple[int, int], latent_dim: int | None = None) -> ModelConfig:
    """The ``arch`` preset ("default", "study" or "temporal") sized for spectrograms of ``shape`` (F, T)."""
    n_freq, n_frames = shape
    if arch == "study":
        cfg = ModelConfig(
            n_freq=n_freq, n_frames=n_frames, channels=(512, 256, 128, 64, 32),
            strides=((2, 2), (2, 2), (2, 2), (2, 2), (2, 1)), decoder_channels=(32, 64, 128, 256),
            latent_dim=128, activation="relu", norm_first=False,
        )
    elif arch == "temporal":
        cfg = _temporal(n_freq, n_frames)
    elif arch == "default":
        # Halve both axes until each is at most 8 (a small bottleneck keeps the dense layers
        # small); filters double from 32 up to 256.
        strides, f, t = [], n_freq, n_frames
        while f > 8 or t > 8:
            s = (2 if f > 8 and f % 2 == 0 else 1, 2 if t > 8 and t % 2 == 0 else 1)
            if s == (1, 1):
                break
            strides.append(s)
            f, t = f // s[0], t // s[1]
        if not strides:
            raise ConfigError(f"spectrogram {n_freq}x{n_frames} is too small or odd-sized for the default architecture")
        channels = tuple(min(256, 32 * 2**i) for i in range(len(strides)))
        cfg = ModelConfig(
            n_freq=n_freq, n_frames=n_frames, channels=channels, strides=tuple(strides),
            decoder_channels=tuple(reversed(channels[:-1])), latent_dim=64,
        )
    else:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {ARCHS}")
    if latent_dim is not None:
        cfg = dataclasses.replace(cfg, latent_dim=latent_dim)
    return cfg.validate()


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    """Optimisation settings. Loss = recon_weight * per-pixel MSE + kl_weight * KL (nats)."""

    what: ClassVar[str] = "training"

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    recon_weight: float = 122880.0  # per-pixel MSE x this: 10x the sum over a 128x96 image
    kl_weight: float = 1.0  # beta
    kl_warmup_epochs: int = 5  # KL weight ramps linearly from 0 over these epochs
    grad_clip: float = 5.0  # max gradient norm; 0 disables
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    checkpoint_every: int = 1  # epochs between "last" checkpoints
    preview_every: int = 2  # epochs between preview reconstructions (events carry them)
    time_limit_s: float | None = None  # stop cleanly after this much training wall time
    augment: bool = False  # warp, stretch, gain and noise on training batches (vae.augment); off until measured
    spectral_weight: float = 0.0  # x the multi-resolution spectral loss (vae.losses), added to the total
    precision: str = "auto"  # "auto" (bf16 + channels-last on CUDA, fp32 elsewhere), "fp32" or "bf16": vae.accel

    def validate(self) -> TrainConfig:
        _check_ints(self, {"epochs": (1, 1_000_000), "batch_size": (1, 65_536), "kl_warmup_epochs": (0, 1_000_000),
                           "checkpoint_every": (1, 1_000_000), "preview_every": (0, 1_000_000), "seed": (0, 2**63 - 1)})
        numbers = {k: getattr(self, k) for k in ("lr", "recon_weight", "kl_weight", "spectral_weight", "grad_clip")}
        for k, v in {**numbers, "time_limit_s": self.time_limit_s or 1.0}.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"{k} must be a finite number, got {v!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.recon_weight <= 0 or self.kl_weight < 0:
            raise ConfigError("recon_weight must be positive and kl_weight non-negative")
        for k in ("spectral_weight", "grad_clip"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{k} must be non-negative, got {getattr(self, k)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`DictConfig.to_dict`, but ``augment``, ``spectral_weight`` and ``precision`` only when not
        at their defaults: a checkpoint trained without them keeps the config.json of before the fields (which
        older versions can load)."""
        d = super().to_dict()
        return {k: v for k, v in d.items()
                if not ((k in ("augment", "spectral_weight") and not v) or (k == "precision" and v == "auto"))}


SPECTRAL_PER_PIXEL = 1.0  # temporal preset: spectral_weight per pixel (vae.losses.spectral_loss)


# The architecture each preset measured best with (README, "The temporal architecture"): a store built
# with a preset's settings trains with it unless --arch says otherwise.
PRESET_ARCHS = {"digits": "temporal", "music": "temporal", "study-digits": "study", "study-music": "study"}


def arch_for(spec: SpectrogramConfig) -> str:
    """The architecture for a store's spectrogram settings: that of the preset it was built with (same sample
    rate, clip duration, frame and hop), else ``default``."""
    key = (spec.sample_rate, spec.duration, spec.n_fft, spec.hop_length)
    for name, arch in PRESET_ARCHS.items():
        p = PRESETS[name]
        if key == (p.sample_rate, p.duration, p.n_fft, p.hop_length):
            return arch
    return "default"


def train_config(arch: str, shape: tuple[int, int]) -> TrainConfig:
    """Training defaults for an architecture preset (``study`` as the study trained digits)."""
    if arch == "study":
        return TrainConfig(epochs=150, batch_size=64, lr=5e-4, recon_weight=1e6, kl_weight=1.0,
                           kl_warmup_epochs=0, grad_clip=0.0)
    # 10x the pixel sum (a Gaussian likelihood with variance 0.05) measured better than 1x: on
    # FSDD, 100 s of training gave test LSD 6.07 dB against 6.25 dB (5.84 dB with latent 64).
    pixels = shape[0] * shape[1]
    if arch == "temporal":
        return TrainConfig(recon_weight=10.0 * pixels, spectral_weight=SPECTRAL_PER_PIXEL * pixels)
    return TrainConfig(recon_weight=10.0 * pixels)
