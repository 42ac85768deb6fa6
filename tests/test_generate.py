"""Generation and latent statistics (vae.generate, vae.latents)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import SR, chirp, noise, tone, write_wav

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
    with pytest.raises(ValueError, match="at least 2"):
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
