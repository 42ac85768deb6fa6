"""Training losses on normalised log-magnitude spectrograms (B, 1, F, T) in [0, 1].

0..1 spans ``top_db`` dB (the store's range, vae's input normalisation), so ``10 ** ((x - 1) * top_db / 20)``
is the linear magnitude relative to the clip's (or the store's) peak.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALES = (1, 2, 4)  # spectral_loss: time-frequency pooling factors, finest first


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) in nats, summed over every latent element of a clip: (B, *L) -> (B,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(dim=1)


def vae_loss(
    x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
    recon_weight: float, kl_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, recon, kl): recon is per-pixel MSE, kl is nats summed over the latent elements
    (a code (B, D) or a sequence (B, D, T')), both averaged over the batch;
    total = recon_weight * recon + kl_weight * kl."""
    recon = F.mse_loss(x_hat, x)
    kl = kl_divergence(mu, logvar).mean()
    return recon_weight * recon + kl_weight * kl, recon, kl


def spectral_loss(x_hat: torch.Tensor, x: torch.Tensor, top_db: float,
                  scales: tuple[int, ...] = SCALES) -> torch.Tensor:
    """Multi-resolution spectral loss, the terms of the multi-resolution STFT loss (Yamamoto et al., 2020)
    taken on spectrograms at several time-frequency resolutions instead of several STFTs of a waveform.

    At each scale s both spectrograms (B, 1, F, T) are average-pooled s x s in linear magnitude; the term
    is the spectral convergence ||M - M_hat||_F / ||M||_F (per clip: loud partials, which per-pixel MSE on
    dB lets blur away) plus the mean absolute error of the pooled log magnitudes (normalised units).
    Returns the mean over scales and clips: a scalar, 0 for a perfect match.
    """
    mag, mag_hat = (torch.pow(10.0, (v - 1) * (top_db / 20)) for v in (x, x_hat))  # (B, 1, F, T) linear
    total = x.new_zeros(())
    for s in scales:
        m, m_hat = (F.avg_pool2d(v, s, ceil_mode=True) if s > 1 else v for v in (mag, mag_hat))
        norm = torch.linalg.vector_norm(m.flatten(1), dim=1).clamp_min(1e-8)  # (B,)
        sc = torch.linalg.vector_norm((m - m_hat).flatten(1), dim=1) / norm
        log_l1 = (torch.log10(m.clamp_min(1e-8)) - torch.log10(m_hat.clamp_min(1e-8))).abs().flatten(1).mean(dim=1)
        total = total + (sc + log_l1 * (20 / top_db)).mean()  # log10 magnitude / (top_db / 20): normalised units
    return total / len(scales)
