"""Spectrogram configuration, analysis, normalisation and inversion (preprocessing.config/.spectrogram)."""

import numpy as np
import pytest
import torch
from conftest import SR, chirp, tone

from preprocessing.config import PRESETS, ConfigError, SpectrogramConfig, preset
from preprocessing.spectrogram import (
    amplitude_to_db,
    db_range,
    db_to_amplitude,
    denormalise,
    log_spectrogram,
    normalise,
    to_audio,
)
from vae.metrics import spectral_convergence

PRESET_SHAPES = {"digits": (128, 96), "music": (512, 256), "study-digits": (256, 64), "study-music": (512, 256)}


@pytest.mark.parametrize(("name", "shape"), PRESET_SHAPES.items())
def test_preset_shapes(name, shape):
    cfg = preset(name).validate()
    assert cfg.shape == shape
    assert tuple(log_spectrogram(np.zeros(cfg.n_samples, np.float32), cfg).shape) == shape


def test_default_preset_and_study_alias():
    assert SpectrogramConfig().shape == (128, 96)
    assert PRESETS["study"] == PRESETS["study-digits"]
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")


@pytest.mark.parametrize(("changes", "match"), [
    ({"duration": -1.0}, "duration"),
    ({"duration": 0.0}, "duration"),
    ({"hop_length": 512, "n_fft": 256}, "hop_length"),
    ({"hop_length": 0}, "hop_length"),
    ({"sample_rate": 0}, "sample_rate"),
    ({"n_fft": 8}, "n_fft"),
    ({"duration": 0.01}, "fewer than one STFT frame"),
    ({"normalisation": "peak"}, "normalisation"),
    ({"windowing": "middle"}, "windowing"),
    ({"phase": "random"}, "phase"),
    ({"top_db": 0.0}, "top_db"),
    ({"griffinlim_iters": 0}, "griffinlim_iters"),
])
def test_bad_parameters_rejected(changes, match):
    with pytest.raises(ConfigError, match=match):
        SpectrogramConfig().replace(**changes)


def test_config_dict_round_trip():
    cfg = PRESETS["music"].replace(ref_db=12.5)
    assert SpectrogramConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        SpectrogramConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_log_spectrogram_levels():
    """A full-scale tone peaks near 20*log10(n_fft/4) dB (Hann window, one-sided); silence sits at the floor."""
    cfg = SpectrogramConfig()
    t = np.arange(cfg.n_samples) / SR
    db = log_spectrogram(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)
    assert db.shape == (128, 96)
    peak_bin = int(db[:, 48].argmax())
    assert peak_bin == round(1000 / (SR / cfg.n_fft))
    assert abs(float(db.max()) - 20 * np.log10(cfg.n_fft / 4)) < 1.0
    assert float(log_spectrogram(np.zeros(cfg.n_samples, np.float32), cfg).max()) == pytest.approx(-100.0)


def test_normalise_denormalise_inverse():
    db = torch.linspace(-70, 10, 200).reshape(10, 20)
    x = normalise(db, -70.0, 10.0)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    torch.testing.assert_close(denormalise(x, -70.0, 10.0), db, atol=1e-4, rtol=0)
    assert float(normalise(torch.tensor([-200.0, 50.0]), -70.0, 10.0).sum()) == 1.0  # clamped to [0, 1]
    with pytest.raises(ValueError, match="silent"):
        normalise(db, 5.0, 5.0)


def test_db_range_global_and_clip():
    db = torch.tensor([[-120.0, -30.0], [0.0, -10.0]])
    glob = SpectrogramConfig(ref_db=20.0)
    assert db_range(db, glob) == (-60.0, 20.0)
    with pytest.raises(ValueError, match="ref_db"):
        db_range(db, SpectrogramConfig())
    assert db_range(db, SpectrogramConfig(normalisation="clip")) == (-80.0, 0.0)  # floored at max - top_db


def _test_signals(cfg):
    n = cfg.n_samples
    return {"tone": tone(440, dur=n / SR) + tone(1500, dur=n / SR, amp=0.2), "chirp": chirp(200, 3000, dur=n / SR)}


@pytest.mark.parametrize("kind", ["tone", "chirp"])
def test_griffinlim_round_trip_and_beats_zero_phase(kind):
    cfg = SpectrogramConfig()  # the digits shape, 75% overlap
    wave = _test_signals(cfg)[kind]
    db = log_spectrogram(wave, cfg)
    torch.manual_seed(0)  # Griffin-Lim starts from random phases
    gl = to_audio(db, cfg, phase="griffinlim", n_iter=48).numpy()
    zero = to_audio(db, cfg, phase="zero").numpy()
    assert gl.shape == zero.shape == (cfg.n_samples,)
    assert np.isfinite(gl).all() and np.isfinite(zero).all()
    # spectrogram -> audio -> spectrogram: magnitudes come back close (in normalised units)
    lo, hi = -60.0, float(db.max())
    err = (normalise(log_spectrogram(gl, cfg), lo, hi) - normalise(db, lo, hi)).abs().mean()
    assert float(err) < 0.05
    sc_gl, sc_zero = spectral_convergence(wave, gl, SR), spectral_convergence(wave, zero, SR)
    assert sc_gl < 0.25
    assert sc_gl < 0.5 * sc_zero


def test_griffinlim_uses_magnitudes_not_power():
    """Doubling the magnitude (+6 dB) must double the output amplitude (power=1 inversion)."""
    cfg = SpectrogramConfig(griffinlim_iters=16)
    db = log_spectrogram(tone(440, dur=cfg.n_samples / SR), cfg)
    torch.manual_seed(0)  # Griffin-Lim starts from random phases
    a = to_audio(db, cfg)
    torch.manual_seed(0)
    b = to_audio(db + 20 * np.log10(2.0), cfg)
    ratio = float(b.abs().max() / a.abs().max())
    assert ratio == pytest.approx(2.0, rel=0.05)


def test_to_audio_batch_and_bad_phase():
    cfg = SpectrogramConfig(sample_rate=SR, duration=0.254, n_fft=64, hop_length=32)
    db = torch.full((3, *cfg.shape), -40.0)
    assert to_audio(db, cfg, phase="zero").shape == (3, cfg.n_samples)
    with pytest.raises(ValueError, match="unknown phase"):
        to_audio(db, cfg, phase="magic")


def test_db_conversions():
    amp = torch.tensor([1e-7, 1e-5, 0.1, 1.0, 10.0])
    torch.testing.assert_close(amplitude_to_db(amp), torch.tensor([-100.0, -100.0, -20.0, 0.0, 20.0]))  # floor at -100
    torch.testing.assert_close(db_to_amplitude(torch.tensor([-20.0, 0.0, 20.0, 20 * float(np.log10(2.0))])),
                               torch.tensor([0.1, 1.0, 10.0, 2.0]))


def test_analysis_is_float32_whatever_the_input():
    cfg = SpectrogramConfig(sample_rate=SR, duration=0.254, n_fft=64, hop_length=32)
    wave = tone(440, dur=0.254).astype(np.float64)
    ref = log_spectrogram(wave.astype(np.float32), cfg)
    for x in (wave, torch.from_numpy(wave)):
        db = log_spectrogram(x, cfg)
        assert db.dtype == torch.float32 and db.shape == (32, 64)
        torch.testing.assert_close(db, ref)


def test_db_range_and_normalise_messages():
    assert db_range(torch.tensor([[-10.0, 0.0], [-5.0, -2.0]]), SpectrogramConfig(normalisation="clip")) == (-10.0, 0.0)
    with pytest.raises(ValueError, match=r"^global normalisation needs ref_db; build a dataset store first$"):
        db_range(torch.zeros(2, 2), SpectrogramConfig())
    flat = r"^cannot normalise a flat spectrogram \(min = max = -12\.5 dB\): silent clip$"
    with pytest.raises(ValueError, match=flat):
        normalise(torch.zeros(2, 2), -12.5, -12.5)
    with pytest.raises(ValueError, match=r"^unknown phase method 'magic'; use 'griffinlim' or 'zero'$"):
        to_audio(torch.zeros(128, 96), SpectrogramConfig(), phase="magic")


def test_zero_phase_inverse_of_a_dc_spectrogram():
    """Only the DC bin, at magnitude n_fft: each frame inverts to ones; the Hann-windowed overlap-add at 75%
    overlap then gives sum(w) / sum(w^2) = 2 / 1.5 = 4/3 away from the edges."""
    cfg = SpectrogramConfig()
    db = torch.full(cfg.shape, -300.0)
    db[0] = 20 * np.log10(cfg.n_fft)
    wave = to_audio(db, cfg, phase="zero")
    assert wave.shape == (cfg.n_samples,)
    torch.testing.assert_close(wave[cfg.n_fft:-cfg.n_fft], torch.full((cfg.n_samples - 2 * cfg.n_fft,), 4 / 3))


@pytest.mark.parametrize("phase", ["zero", "griffinlim"])
def test_other_frame_counts_give_whole_hops(phase):
    """A spectrogram that is not one clip long (e.g. joined windows) inverts to (frames - 1) hops."""
    cfg = SpectrogramConfig(sample_rate=SR, duration=0.254, n_fft=64, hop_length=32, griffinlim_iters=2)
    db = log_spectrogram(tone(440, dur=0.1), cfg)
    assert db.shape == (32, 26)
    assert to_audio(db, cfg, phase=phase).shape == (25 * 32,)
    assert to_audio(db.expand(2, -1, -1), cfg, phase=phase).shape == (2, 25 * 32)


@pytest.mark.parametrize("n_iter", [0, 1001, 10**9, 2.5])
def test_griffinlim_iterations_are_bounded_before_any_work(n_iter):
    """A hostile --griffinlim-iters (or a value from a file) cannot hang a reconstruction (#12, defect 7)."""
    cfg = SpectrogramConfig()
    with pytest.raises(ConfigError, match=r"Griffin-Lim iterations must be a whole number from 1 to 1000"):
        to_audio(torch.zeros(cfg.n_freq, cfg.n_frames), cfg, "griffinlim", n_iter)
