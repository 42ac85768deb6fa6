"""The convolutional VAE: encoder -> (mu, logvar) -> reparameterised z -> decoder.

Two kinds (``ModelConfig.kind``): ``global`` encodes a clip (B, 1, F, T) to one code (B, D), through
2-D convolutions and a dense layer (the study's design); ``temporal`` folds the F frequency bins into
channels and convolves along time only, so a clip becomes a sequence of codes (B, D, T / r) and a
spectrogram of any length that divides by r encodes and decodes in one piece, without seams.

A conditional model (``cfg.labels``, issue #14) also takes labels (B,) long: the decoder concatenates a
learned label embedding (E numbers) to z, over every frame of a temporal code, and the encoder (when
``cfg.label_encoder``) to its input. Without labels a conditional model uses the mean of its label
embeddings: "no label in particular", for uses that have none (named directions, ONNX).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def _block(conv: nn.Module, channels: int, cfg: ModelConfig) -> nn.Sequential:
    act = nn.ReLU() if cfg.activation == "relu" else nn.LeakyReLU(0.2)
    norm = nn.BatchNorm2d(channels)
    return nn.Sequential(conv, norm, act) if cfg.norm_first else nn.Sequential(conv, act, norm)


def _same_padding(kernel: int) -> int:
    """Padding of an odd ``kernel`` that makes a stride-s conv map n -> ceil(n / s), like Keras' 'same'.

    floor((n + 2 * (k // 2) - k) / s) + 1 = floor((n - 1) / s) + 1 for odd k: the stride does not enter.
    """
    return kernel // 2


class LabelEmbedding(nn.Module):
    """Labels (B,) long -> (B, E) learned vectors; None -> the mean vector, for each of ``batch`` clips."""

    def __init__(self, n_labels: int, dim: int):
        super().__init__()
        self.table = nn.Embedding(n_labels, dim)

    def forward(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        if labels is None:
            return self.table.weight.mean(0).expand(batch, -1)  # (B, E)
        if labels.shape != (batch,):
            raise ValueError(f"labels must be (B,) = ({batch},), got {tuple(labels.shape)}")
        return self.table(labels.to(self.table.weight.device))  # (B, E)


def _embedding(cfg: ModelConfig, encoder: bool) -> LabelEmbedding | None:
    """The label embedding of the decoder (or of the encoder), or None when it takes no label."""
    used = cfg.n_labels and (cfg.label_encoder or not encoder)
    return LabelEmbedding(cfg.n_labels, cfg.label_dim) if used else None


def _with_label(h: torch.Tensor, emb: LabelEmbedding | None, labels: torch.Tensor | None) -> torch.Tensor:
    """(B, C) or (B, C, T) -> (B, C + E) or (B, C + E, T): the label's vector appended (over every frame)."""
    if emb is None:
        return h
    e = emb(labels, h.shape[0]).to(h.dtype)  # (B, E); not len(h), which torch.export fixes to the example's B
    if h.dim() == 3:
        e = e[:, :, None].expand(-1, -1, h.shape[-1])  # (B, E, T)
    return torch.cat([h, e], dim=1)


def _label_width(cfg: ModelConfig, encoder: bool) -> int:
    return cfg.label_dim if cfg.n_labels and (cfg.label_encoder or not encoder) else 0


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.label = _embedding(cfg, encoder=True)
        layers, c_in = [], 1
        for c, s in zip(cfg.channels, cfg.strides):
            layers.append(_block(nn.Conv2d(c_in, c, cfg.kernel, s, _same_padding(cfg.kernel)), c, cfg))
            c_in = c
        self.convs = nn.Sequential(*layers)
        width = math.prod(cfg.bottleneck) + _label_width(cfg, encoder=True)
        self.mu = nn.Linear(width, cfg.latent_dim)
        self.logvar = nn.Linear(width, cfg.latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = _with_label(self.convs(x).flatten(1), self.label, labels)  # (B, C*F'*T' [+ E])
        return self.mu(h), self.logvar(h)  # (B, D), (B, D)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.bottleneck = cfg.bottleneck
        self.label = _embedding(cfg, encoder=False)
        self.dense = nn.Linear(cfg.latent_dim + _label_width(cfg, encoder=False), math.prod(cfg.bottleneck))
        layers, c_in = [], cfg.channels[-1]
        strides = list(reversed(cfg.strides))  # mirror the encoder
        for c, s in zip(cfg.decoder_channels, strides[:-1]):
            layers.append(_block(self._up(c_in, c, s, cfg.kernel), c, cfg))
            c_in = c
        layers.append(self._up(c_in, 1, strides[-1], cfg.kernel))
        self.convs = nn.Sequential(*layers)

    @staticmethod
    def _up(c_in: int, c_out: int, stride: tuple[int, int], kernel: int) -> nn.ConvTranspose2d:
        # output_padding = stride - 1 makes each layer exactly invert the encoder's n -> n/s.
        return nn.ConvTranspose2d(c_in, c_out, kernel, stride, _same_padding(kernel),
                                  output_padding=(stride[0] - 1, stride[1] - 1))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dense(_with_label(z, self.label, labels)).view(-1, *self.bottleneck)  # (B, C, F', T')
        return torch.sigmoid(self.convs(h))  # (B, 1, F, T) in [0, 1]


# ----- temporal: 1-D convolutions along time ------------------------------------------------------


def _conv1d(c_in: int, c_out: int, kernel: int, cfg: ModelConfig, stride: int = 1, dilation: int = 1) -> nn.Module:
    """A 'same'-padded Conv1d (n -> n / stride for n divisible by stride); weight-normed when cfg.norm is
    'weight' (as DAC and RAVE: no statistics of the activations, so inference does not depend on the batch)."""
    pad = (dilation * (kernel - 1) + 1 - stride + 1) // 2
    conv = nn.Conv1d(c_in, c_out, kernel, stride, pad, dilation)
    return nn.utils.parametrizations.weight_norm(conv) if cfg.norm == "weight" else conv


def _norm1d(channels: int, cfg: ModelConfig) -> nn.Module:
    # GroupNorm with one group normalises each clip over (C, T): no batch statistics at inference either
    return nn.GroupNorm(1, channels) if cfg.norm == "group" else nn.Identity()


def _act(cfg: ModelConfig) -> nn.Module:
    return nn.ReLU() if cfg.activation == "relu" else nn.LeakyReLU(0.2)


class ResBlock(nn.Module):
    """x + f(x), f = (norm, act, conv dilation 1, norm, act, conv dilation 3): (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        self.f = nn.Sequential(_norm1d(channels, cfg), _act(cfg), _conv1d(channels, channels, cfg.kernel, cfg),
                               _norm1d(channels, cfg), _act(cfg), _conv1d(channels, channels, cfg.kernel, cfg, 1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class Upsample(nn.Module):
    """Nearest-neighbour repeat by ``factor`` then a 'same' conv: no checkerboard, which a transposed
    conv whose kernel does not divide by its stride leaves. (B, C_in, T) -> (B, C_out, factor * T)."""

    def __init__(self, c_in: int, c_out: int, factor: int, cfg: ModelConfig):
        super().__init__()
        self.factor = factor
        self.conv = _conv1d(c_in, c_out, cfg.kernel, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.factor, mode="nearest"))


class TemporalEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = [*cfg.channels, cfg.channels[-1]]
        self.label = _embedding(cfg, encoder=True)
        layers: list[nn.Module] = [_conv1d(cfg.n_freq + _label_width(cfg, True), widths[0], cfg.kernel, cfg)]
        for i, (_, st) in enumerate(cfg.strides):
            layers += [ResBlock(widths[i], cfg) for _ in range(cfg.res_blocks)]
            layers += [_norm1d(widths[i], cfg), _act(cfg), _conv1d(widths[i], widths[i + 1], 2 * st, cfg, st)]
        layers += [_norm1d(widths[-1], cfg), _act(cfg), _conv1d(widths[-1], 2 * cfg.latent_dim, 3, cfg)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(_with_label(x.flatten(1, 2), self.label, labels))  # (B, F [+ E], T) -> (B, 2D, T/r)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar  # (B, D, T/r) each


class TemporalDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = [cfg.channels[-1], *cfg.decoder_channels, cfg.channels[0]]  # the encoder's, reversed
        self.label = _embedding(cfg, encoder=False)
        layers: list[nn.Module] = [_conv1d(cfg.latent_dim + _label_width(cfg, False), widths[0], 3, cfg)]
        for j, (_, st) in enumerate(reversed(cfg.strides)):
            layers.append(Upsample(widths[j], widths[j + 1], st, cfg))
            layers += [ResBlock(widths[j + 1], cfg) for _ in range(cfg.res_blocks)]
        layers += [_norm1d(widths[-1], cfg), _act(cfg), _conv1d(widths[-1], cfg.n_freq, cfg.kernel, cfg)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = _with_label(z, self.label, labels)  # (B, D [+ E], T/r)
        return torch.sigmoid(self.net(h)).unsqueeze(1)  # (B, F, T) -> (B, 1, F, T) in [0, 1]


# ----- the VAE ---------------------------------------------------------------------------------------


class VAE(nn.Module):
    """Spectrograms (B, 1, F, T) in [0, 1] <-> latent codes (B, *cfg.latent_shape); a conditional model
    also takes labels (B,) long, indices into ``cfg.labels``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        temporal = cfg.kind == "temporal"
        self.encoder = TemporalEncoder(cfg) if temporal else Encoder(cfg)
        self.decoder = TemporalDecoder(cfg) if temporal else Decoder(cfg)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, labels)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(z, labels)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, labels)  # (B, D) or (B, D, T/r) each
        return self.decode(self.reparameterise(mu, logvar), labels), mu, logvar

