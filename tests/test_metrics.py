"""Reconstruction metrics (vae.metrics)."""

import numpy as np
import pytest
import torch
from conftest import SR, chirp, noise

from vae.metrics import log_spectral_distance, spectral_convergence, spectrogram_mse, stoi

REF = chirp(200, 3000, dur=0.5) + noise(0.5, amp=0.02, seed=1)


def test_identical_signals_score_zero():
    assert log_spectral_distance(REF, REF, SR) == pytest.approx(0.0, abs=1e-6)
    assert spectral_convergence(REF, REF, SR) == pytest.approx(0.0, abs=1e-6)
    assert spectrogram_mse(torch.ones(3, 4), torch.ones(3, 4)) == 0.0


@pytest.mark.parametrize("metric", [log_spectral_distance, spectral_convergence])
def test_more_degradation_scores_worse(metric):
    slight = REF + noise(0.5, amp=0.01, seed=2)
    heavy = REF + noise(0.5, amp=0.2, seed=3)
    scores = [metric(REF, est, SR) for est in (REF, slight, heavy)]
    assert scores[0] < scores[1] < scores[2]


def test_spectral_convergence_of_scaled_signal():
    """Magnitudes scaled by 0.5 differ by exactly half the reference norm."""
    assert spectral_convergence(REF, 0.5 * REF, SR) == pytest.approx(0.5, abs=1e-3)


def test_lsd_grows_with_gain_loss_and_is_floored():
    """-6 dB everywhere gives about 6 dB; -20 dB gives at most 20 (the 80 dB floor caps quiet bins)."""
    half, tenth = log_spectral_distance(REF, 0.5 * REF, SR), log_spectral_distance(REF, 0.1 * REF, SR)
    assert 4.0 < half < 6.1 and half < tenth <= 20.0 + 1e-3


def test_longer_estimate_is_cut_to_the_reference():
    longer = np.concatenate([REF, noise(0.2, amp=0.5, seed=5)])
    assert spectral_convergence(REF, longer, SR) < 0.05
    assert log_spectral_distance(REF, longer, SR) < 1.0


def test_spectrogram_mse():
    assert spectrogram_mse(torch.zeros(2, 2), torch.full((2, 2), 0.5)) == pytest.approx(0.25)
    assert spectrogram_mse(np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)) == pytest.approx(1.0)


def test_stoi_prefers_the_clean_signal():
    speechish = np.concatenate([chirp(300, 1200, dur=0.5) * np.hanning(4000).astype(np.float32)] * 4)
    clean = stoi(speechish, speechish, SR)
    noisy = stoi(speechish, speechish + noise(2.0, amp=0.5, seed=4), SR)
    assert clean == pytest.approx(1.0, abs=1e-3) and noisy < clean
