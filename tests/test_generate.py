"""Generation and latent statistics (vae.generate, vae.latents)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import SR, chirp, noise, tone, write_wav

from preprocessing.audio import AudioError
from preprocessing.spectrogram import denormalise, log_spectrogram, to_audio
from vae import generate as generate_module
from vae.checkpoint import load_checkpoint
from vae.generate import (
    analyse,
    analyse_file,
    decode,
    encode,
    interpolate,
    reconstruct,
    reconstruct_audio,
    sample,
    to_wave,
)
from vae.latents import compute_latent_stats, load_latent_stats, save_latent_stats, stats_from_codes


def test_encode_decode_reconstruct_shapes(tiny_ckpt):
    x = torch.rand(3, 32, 64)
    mu, logvar = encode(tiny_ckpt, x)
    assert mu.shape == logvar.shape == (3, 4)
    assert encode(tiny_ckpt, x[0])[0].shape == (1, 4)  # a single (F, T) spectrogram
    out = decode(tiny_ckpt, mu)
    assert out.shape == (3, 32, 64) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert decode(tiny_ckpt, mu[0]).shape == (1, 32, 64)
    torch.testing.assert_close(reconstruct(tiny_ckpt, x.numpy()), out)  # numpy in, posterior mean
    with pytest.raises(ValueError, match="does not match"):
        encode(tiny_ckpt, torch.rand(2, 32, 60))


def test_sample_seed_and_temperature(tiny_ckpt):
    a, b = sample(tiny_ckpt, 500, seed=3), sample(tiny_ckpt, 500, seed=3)
    assert a.shape == (500, 4) and torch.equal(a, b)
    assert not torch.equal(a, sample(tiny_ckpt, 500, seed=4))
    hot = sample(tiny_ckpt, 500, temperature=2.0, seed=3)
    torch.testing.assert_close(hot, 2 * a)
    assert float(a.std()) == pytest.approx(1.0, abs=0.1)
    assert float(sample(tiny_ckpt, 500, temperature=0.5, seed=9).std()) == pytest.approx(0.5, abs=0.05)


def test_interpolate():
    za, zb = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([4.0, -1.0, 2.0])
    path = interpolate(za, zb, 5)
    assert path.shape == (5, 3)
    assert torch.equal(path[0], za) and torch.equal(path[-1], zb)
    torch.testing.assert_close(path[2], (za + zb) / 2)
    with pytest.raises(ValueError, match="2 to 32"):
        interpolate(za, zb, 1)


@pytest.mark.parametrize("n", [500, 2032, 3000, 5000])
def test_reconstruct_audio_keeps_length(tiny_ckpt, n):
    """Any input length comes back with that length (windows are padded, not dropped)."""
    wave = chirp(200, 3000, dur=n / SR) if n > 600 else tone(440, dur=n / SR)
    out, a, x_hat = reconstruct_audio(tiny_ckpt, wave, n_iter=4)
    assert out.dtype == np.float32 and out.shape == (n,) and np.isfinite(out).all()
    assert a.length == n and len(a.specs) == len(a.ranges) == -(-n // 2032)
    assert x_hat.shape == a.specs.shape
    assert out.std() > 0


def test_reconstruct_audio_zero_phase_and_level(tiny_ckpt):
    wave = tone(500, dur=0.5, amp=0.1)
    out, a, _ = reconstruct_audio(tiny_ckpt, wave, phase="zero")
    assert out.shape == wave.shape and np.isfinite(out).all()
    assert a.gain == pytest.approx(10.0, rel=1e-3)
    assert np.abs(out).max() <= 0.1 + 1e-6  # returned at the input's level, never louder than peak


def test_analyse_silence_and_clip_normalisation(tiny_ckpt):
    clip = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(normalisation="clip"))
    wave = np.concatenate([tone(440, dur=0.254), np.zeros(2032, np.float32)])
    a = analyse(clip, wave)
    assert len(a.specs) == 2 and torch.isfinite(a.specs).all()
    assert float(a.specs[1].max()) == 0.0  # the silent window stays silent, no division by zero
    out, _, _ = reconstruct_audio(clip, np.zeros(3000, np.float32), n_iter=2)
    assert out.shape == (3000,) and np.isfinite(out).all()


def test_analyse_values_global_range(tiny_ckpt):
    """Peak-normalised, cut into whole windows (the tail zero-padded), dB mapped from [ref - top, ref]."""
    wave = chirp(300, 2000, dur=0.4, amp=0.25)  # 3200 samples: two windows of 2032, the second padded
    a = analyse(tiny_ckpt, wave)
    gain = 1.0 / float(np.abs(wave).max())
    assert a.gain == pytest.approx(gain) and a.length == 3200
    assert a.ranges == [(-50.0, 30.0)] * 2  # ref_db 30, top_db 80
    padded = np.concatenate([wave, np.zeros(2 * 2032 - 3200, np.float32)]) * gain
    for w in range(2):
        db = log_spectrogram(padded[w * 2032:(w + 1) * 2032], tiny_ckpt.spec)
        torch.testing.assert_close(a.specs[w], ((db + 50.0) / 80.0).clamp(0, 1), atol=1e-5, rtol=0)
    quiet = analyse(dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(peak_normalise=False)), wave)
    assert quiet.gain == 1.0
    db = log_spectrogram(wave[:2032], tiny_ckpt.spec)
    torch.testing.assert_close(quiet.specs[0], ((db + 50.0) / 80.0).clamp(0, 1), atol=1e-5, rtol=0)


def test_analyse_clip_normalisation_ranges(tiny_ckpt):
    clip = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(normalisation="clip"))
    wave = tone(700, dur=0.254, amp=0.5) + noise(0.254, amp=0.01, seed=3)
    a = analyse(clip, wave)
    db = log_spectrogram(wave / np.abs(wave).max(), clip.spec)
    hi = float(db.max())
    lo = max(float(db.min()), hi - 80.0)
    assert a.ranges[0] == pytest.approx((lo, hi), abs=1e-3)  # the quietest bin rounds differently in a batch
    torch.testing.assert_close(a.specs[0], ((db - lo) / (hi - lo)).clamp(0, 1), atol=1e-4, rtol=0)


def _zero_phase(ck, x, ranges):
    """Windows (W, F, T) in [0, 1] -> one signal, each window denormalised with its own (lo, hi)."""
    return torch.cat([to_audio(denormalise(w, lo, hi), ck.spec, phase="zero") for w, (lo, hi) in zip(x, ranges)])


def test_to_wave_uses_the_right_db_range(tiny_ckpt):
    x = 0.5 * torch.rand(2, 32, 64, generator=torch.Generator().manual_seed(0))
    # no peak normalisation: levels are kept exactly
    raw = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(peak_normalise=False))
    np.testing.assert_allclose(to_wave(raw, x, phase="zero"), _zero_phase(raw, x, [(-50.0, 30.0)] * 2).numpy(),
                               atol=1e-5)  # the global range ref - top .. ref
    ranges = [(-70.0, -10.0), (-40.0, 0.0)]
    np.testing.assert_allclose(to_wave(raw, x, ranges, phase="zero"), _zero_phase(raw, x, ranges).numpy(),
                               atol=1e-5)
    clip = dataclasses.replace(raw, spec=raw.spec.replace(normalisation="clip"), meta={"typical_range": [-60.0, -5.0]})
    np.testing.assert_allclose(to_wave(clip, x, phase="zero"), _zero_phase(clip, x, [(-60.0, -5.0)] * 2).numpy(),
                               atol=1e-5)
    # peak normalisation: scaled down to a 0.99 peak when louder, never up
    x_loud = 0.5 + x  # -10 .. 30 dB
    loud = _zero_phase(tiny_ckpt, x_loud, [(-50.0, 30.0)] * 2).numpy()
    assert np.abs(loud).max() > 1.0
    np.testing.assert_allclose(to_wave(tiny_ckpt, x_loud, phase="zero"), loud * 0.99 / np.abs(loud).max(),
                               atol=1e-6)
    soft = _zero_phase(tiny_ckpt, x, ranges).numpy()
    assert np.abs(soft).max() < 0.99
    np.testing.assert_allclose(to_wave(tiny_ckpt, x, ranges, phase="zero"), soft, atol=1e-6)


def test_reconstruct_audio_is_the_decoded_windows_at_the_input_level(tiny_ckpt):
    wave = chirp(300, 2000, dur=0.4, amp=0.25)
    out, a, x_hat = reconstruct_audio(tiny_ckpt, wave, phase="zero")
    torch.testing.assert_close(x_hat, reconstruct(tiny_ckpt, a.specs))
    expected = to_wave(tiny_ckpt, x_hat, a.ranges, phase="zero")[:3200] / a.gain
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_analyse_file(tiny_ckpt, tmp_path):
    path = write_wav(tmp_path / "x.wav", noise(0.6, seed=2))
    a = analyse_file(tiny_ckpt, str(path))
    assert a.specs.shape == (3, 32, 64) and a.length == 4800


def test_to_wave_from_samples(tiny_ckpt):
    specs = decode(tiny_ckpt, sample(tiny_ckpt, 2, seed=0))
    wave = to_wave(tiny_ckpt, specs, n_iter=4)
    assert wave.shape == (2 * 2032,) and wave.dtype == np.float32 and np.isfinite(wave).all()
    assert 0 < np.abs(wave).max() <= 0.99 + 1e-6
    clip = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(normalisation="clip"),
                               meta={"typical_range": [-50.0, 10.0]})
    assert np.isfinite(to_wave(clip, specs[0], phase="zero")).all()


def test_trained_checkpoint_reconstructs_better_than_untrained(trained, tiny_store, tiny_ckpt):
    ck = load_checkpoint(trained[0])
    x = torch.from_numpy(np.array(tiny_store.specs[tiny_store.indices("test")]))
    trained_err = float(((reconstruct(ck, x) - x) ** 2).mean())
    untrained_err = float(((reconstruct(tiny_ckpt, x) - x) ** 2).mean())
    assert trained_err < untrained_err


def test_latent_stats_from_codes():
    rng = np.random.default_rng(0)
    # variance mostly along the first axis, then the second
    codes = torch.from_numpy(rng.standard_normal((200, 5)) * [10.0, 3.0, 0.1, 0.1, 0.1]).float()
    labels = ["a", "b"] * 100
    s = stats_from_codes(codes, labels, [f"c{i}" for i in range(200)])
    assert s.components.shape == (5, 5) and s.component_sd.shape == (5,)
    assert float(s.explained.sum()) == pytest.approx(1.0)
    assert abs(float(s.components[0, 0])) == pytest.approx(1.0, abs=0.01)
    assert s.n_sliders(coverage=0.8) == 1 and s.n_sliders(coverage=0.99) == 2 and s.n_sliders(1.0, cap=3) == 3
    assert s.label_names == ["a", "b"] and s.label_means.shape == (2, 5)
    torch.testing.assert_close(s.label_means[0], codes[0::2].mean(0))
    assert s.project(codes).shape == (200, 2)


def test_latent_stats_save_load(tmp_path):
    codes = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    s = stats_from_codes(codes, [None, "x", "y"] * 10, [f"n{i}" for i in range(30)])
    assert load_latent_stats(tmp_path) is None
    save_latent_stats(tmp_path, s)
    back = load_latent_stats(tmp_path)
    for k in ("mean", "components", "component_sd", "explained", "label_means", "codes"):
        assert torch.equal(getattr(back, k), getattr(s, k)), k
    assert back.label_names == ["x", "y"] and back.code_labels[:3] == [None, "x", "y"]
    assert back.code_names == s.code_names and back.n_sliders() == s.n_sliders()


def test_compute_latent_stats_on_store(tiny_ckpt, tiny_store):
    idx = tiny_store.indices("test")
    s = compute_latent_stats(tiny_ckpt.model, tiny_store, idx)
    assert s.codes.shape == (12, 4) and s.code_names[0] == tiny_store.clip_name(idx[0])
    torch.testing.assert_close(s.codes, encode(tiny_ckpt, np.array(tiny_store.specs[idx]))[0])
    assert 1 <= s.n_sliders() <= 4


def test_interpolate_two_steps_is_the_two_ends():
    za, zb = torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 5.0])
    torch.testing.assert_close(interpolate(za, zb, 2), torch.tensor([[1.0, -2.0], [3.0, 5.0]]), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^interpolation takes 2 to 32 steps, got 1$"):
        interpolate(za, zb, 1)


def test_encode_accepts_float64_and_names_a_wrong_shape(tiny_ckpt):
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 64))  # float64
    mu, _ = encode(tiny_ckpt, x)
    torch.testing.assert_close(mu, encode(tiny_ckpt, x.astype(np.float32))[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^spectrogram shape \(32, 60\) does not match the model's \(32, 64\)$"):
        encode(tiny_ckpt, np.zeros((2, 32, 60), np.float32))


def test_analyse_file_refuses_a_file_shorter_than_one_frame(tiny_ckpt, tmp_path):
    path = write_wav(tmp_path / "blip.wav", tone(440, dur=40 / SR))  # 40 samples < n_fft 64
    with pytest.raises(AudioError, match="too short"):
        analyse_file(tiny_ckpt, str(path))


def test_silent_window_under_clip_normalisation_keeps_a_top_db_range(tiny_ckpt):
    clip = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(normalisation="clip"))
    a = analyse(clip, np.concatenate([tone(440, dur=0.254), np.zeros(2032, np.float32)]))
    lo, hi = a.ranges[1]
    assert hi - lo == 80.0 and float(a.specs[1].abs().max()) == 0.0


def test_to_wave_default_typical_range_and_no_peak_normalisation(tiny_ckpt):
    x = 0.5 + 0.5 * torch.rand(2, 32, 64, generator=torch.Generator().manual_seed(0))
    raw = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(peak_normalise=False))
    # a per-clip model without a stored typical range decodes with -40 .. 30 dB
    clip = dataclasses.replace(raw, spec=raw.spec.replace(normalisation="clip"), meta={})
    np.testing.assert_allclose(to_wave(clip, x, phase="zero"), _zero_phase(clip, x, [(-40.0, 30.0)] * 2).numpy(),
                               atol=1e-5)
    # without peak normalisation a loud signal is returned as it is
    loud = _zero_phase(raw, x, [(-50.0, 30.0)] * 2).numpy()
    assert np.abs(loud).max() > 1.0
    np.testing.assert_allclose(to_wave(raw, x, phase="zero"), loud, atol=1e-5)


@pytest.mark.parametrize(("peak", "expected_peak"), [(0.995, 0.99), (0.5, 0.5), (0.0, 0.0)])
def test_to_wave_limits_the_peak_to_0_99(tiny_ckpt, monkeypatch, peak, expected_peak):
    signal = torch.linspace(-1, 1, 2 * 2032) * peak
    monkeypatch.setattr(generate_module, "to_audio", lambda db, spec, phase=None, n_iter=None: signal)
    out = to_wave(tiny_ckpt, torch.zeros(2, 32, 64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (signal * (expected_peak / peak if peak else 1.0)).numpy(), rtol=1e-6)
