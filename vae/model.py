"""The convolutional VAE: encoder -> (mu, logvar) -> reparameterised z -> decoder."""

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


class VAE(nn.Module):
    """Spectrograms (B, 1, F, T) in [0, 1] <-> latent codes (B, latent_dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)  # (B, D) each
        return self.decode(self.reparameterise(mu, logvar)), mu, logvar


def vae_loss(
    x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
    recon_weight: float, kl_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, recon, kl): recon is per-pixel MSE, kl is nats summed over latent dims,
    both averaged over the batch; total = recon_weight * recon + kl_weight * kl."""
    recon = F.mse_loss(x_hat, x)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    return recon_weight * recon + kl_weight * kl, recon, kl
