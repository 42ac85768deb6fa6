"""The convolutional VAE: encoder -> (mu, logvar) -> reparameterised z -> decoder.

Two kinds (``ModelConfig.kind``): ``global`` encodes a clip (B, 1, F, T) to one code (B, D), through
2-D convolutions and a dense layer (the study's design); ``temporal`` folds the F frequency bins into
channels and convolves along time only, so a clip becomes a sequence of codes (B, D, T / r) and a
spectrogram of any length that divides by r encodes and decodes in one piece, without seams.
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


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, c_in = [], 1
        for c, s in zip(cfg.channels, cfg.strides):
            layers.append(_block(nn.Conv2d(c_in, c, cfg.kernel, s, _same_padding(cfg.kernel)), c, cfg))
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.mu = nn.Linear(math.prod(cfg.bottleneck), cfg.latent_dim)
        self.logvar = nn.Linear(math.prod(cfg.bottleneck), cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)  # (B, C*F'*T')
        return self.mu(h), self.logvar(h)  # (B, D), (B, D)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.bottleneck = cfg.bottleneck
        self.dense = nn.Linear(cfg.latent_dim, math.prod(cfg.bottleneck))
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

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.dense(z).view(-1, *self.bottleneck)  # (B, C, F', T')
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
        layers: list[nn.Module] = [_conv1d(cfg.n_freq, widths[0], cfg.kernel, cfg)]
        for i, (_, st) in enumerate(cfg.strides):
            layers += [ResBlock(widths[i], cfg) for _ in range(cfg.res_blocks)]
            layers += [_norm1d(widths[i], cfg), _act(cfg), _conv1d(widths[i], widths[i + 1], 2 * st, cfg, st)]
        layers += [_norm1d(widths[-1], cfg), _act(cfg), _conv1d(widths[-1], 2 * cfg.latent_dim, 3, cfg)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x.flatten(1, 2))  # (B, 1, F, T) -> (B, F, T) -> (B, 2D, T/r)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar  # (B, D, T/r) each


class TemporalDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = [cfg.channels[-1], *cfg.decoder_channels, cfg.channels[0]]  # the encoder's, reversed
        layers: list[nn.Module] = [_conv1d(cfg.latent_dim, widths[0], 3, cfg)]
        for j, (_, st) in enumerate(reversed(cfg.strides)):
            layers.append(Upsample(widths[j], widths[j + 1], st, cfg))
            layers += [ResBlock(widths[j + 1], cfg) for _ in range(cfg.res_blocks)]
        layers += [_norm1d(widths[-1], cfg), _act(cfg), _conv1d(widths[-1], cfg.n_freq, cfg.kernel, cfg)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)).unsqueeze(1)  # (B, D, T/r) -> (B, F, T) -> (B, 1, F, T) in [0, 1]


# ----- the VAE ---------------------------------------------------------------------------------------


class VAE(nn.Module):
    """Spectrograms (B, 1, F, T) in [0, 1] <-> latent codes (B, *cfg.latent_shape)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        temporal = cfg.kind == "temporal"
        self.encoder = TemporalEncoder(cfg) if temporal else Encoder(cfg)
        self.decoder = TemporalDecoder(cfg) if temporal else Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)  # (B, D) or (B, D, T/r) each
        return self.decode(self.reparameterise(mu, logvar)), mu, logvar

