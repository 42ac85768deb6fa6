"""Reconstruction metrics (vae.metrics)."""

import math
import warnings

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


NOISE16 = noise(1.0, sr=16000, amp=0.05, seed=7)  # white: every bin far above the 80 dB floor


def test_lsd_of_a_gain_change_is_the_gain_in_db():
    """Below 1.0 everywhere (|X| ~ 0.4): the 1e-10 floor of the log, not 1.0, keeps every bin."""
    assert log_spectral_distance(NOISE16, 0.5 * NOISE16, 16000) == pytest.approx(20 * np.log10(2), abs=1e-3)


def test_lsd_is_a_mean_over_frames_of_the_rms_over_frequency():
    """Half the frames 6 dB down, half unchanged: the frame RMS is 6.02 dB or 0, so the mean is about 3 dB
    (an RMS over frames first would give 6.02 / sqrt(2) = 4.3 dB)."""
    est = NOISE16.copy()
    est[8000:] *= 0.5
    assert log_spectral_distance(NOISE16, est, 16000) == pytest.approx(20 * np.log10(2) / 2, abs=0.2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_metrics_are_scale_invariant_and_take_any_float(dtype):
    quiet = (1e-5 * NOISE16).astype(dtype)  # STFT norm far below 1
    assert spectral_convergence(quiet, 0.5 * quiet, 16000) == pytest.approx(0.5, abs=1e-3)
    assert log_spectral_distance(quiet, 0.5 * quiet, 16000) == pytest.approx(20 * np.log10(2), abs=1e-3)


def test_stoi_is_classic_stoi_and_nan_without_a_warning_for_short_clips():
    from pystoi import stoi as pystoi_stoi

    speechish = np.concatenate([chirp(300, 1200, dur=0.5) * np.hanning(4000).astype(np.float32)] * 4)
    noisy = speechish + noise(2.0, amp=0.3, seed=4)
    assert stoi(speechish, noisy, SR) == pytest.approx(pystoi_stoi(speechish, noisy, SR, extended=False), abs=1e-9)
    longer = np.concatenate([noisy, noise(0.3, amp=0.3, seed=6)])  # compared over the common length
    assert stoi(speechish, longer, SR) == pytest.approx(stoi(speechish, noisy, SR), abs=1e-9)
    short = chirp(300, 1200, dur=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pystoi's "Not enough STFT frames" warning is expected and silenced
        assert math.isnan(stoi(short, short, SR))


def test_lsd_sees_noise_far_below_a_tone():
    """A Hann-windowed analysis leaves the bins away from a pure tone (here 64 at the peak, 36 dB) at the
    floor, 80 dB down; white noise 40 dB below the tone lifts them to about -22 dB, 22 dB above the floor.
    (A rectangular window would leak the tone into every bin and hide the noise.)"""
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1015.625 * t)).astype(np.float32)  # half-way between two bins
    assert 15.0 < log_spectral_distance(tone, tone + noise(1.0, sr=16000, amp=0.01, seed=1), 16000) < 25.0
