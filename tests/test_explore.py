"""Latent exploration: sliders <-> codes, start points, rendering, interpolation, maps
(vae.latents, vae.generate, studio.latent_space)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, digit_sound, write_wav

from preprocessing import audio
from studio import latent_space
from studio.clips import Clip
from vae import generate, latents
from vae.checkpoint import load_checkpoint
from vae.generate import analyse, decode, encode, to_wave
from vae.latents import LatentStats, load_latent_stats


@pytest.fixture(scope="module")
def model(trained):
    out = trained[0]
    return load_checkpoint(out), load_latent_stats(out)


def made_stats(d: int = 6, k: int = 4) -> LatentStats:
    """Statistics with known parts: orthonormal, non-axis directions and a distinct SD for each."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(5)))
    return LatentStats(mean=torch.linspace(-1.0, 1.0, d), components=q.T[:k].contiguous(),
                       component_sd=torch.tensor([2.0, 1.5, 0.7, 0.3])[:k], explained=torch.full((k,), 1.0 / k),
                       label_names=[], label_means=torch.zeros(0, d), codes=torch.zeros(0, d), code_labels=[],
                       code_names=[])


def test_prior_stats_shapes():
    s = latents.prior_stats(4)
    assert s.components.shape == (4, 4) and s.component_sd.tolist() == [1.0] * 4
    assert len(latent_space.slider_specs(s)) <= 4
    assert latents.prior_stats(32).components.shape == (latents.MAX_SLIDERS, 32)


def test_slider_specs_cover_variance_and_are_capped(model):
    _, stats = model
    specs = latent_space.slider_specs(stats)
    assert 1 <= len(specs) <= min(latents.MAX_SLIDERS, len(stats.components))
    assert all(s.minimum == -latents.RANGE_SD and s.maximum == latents.RANGE_SD for s in specs)
    assert "% of the variation" in specs[0].label
    assert len(latent_space.slider_specs(stats, coverage=0.99, cap=2)) <= 2
    assert stats.covered(len(stats.components)) == pytest.approx(1.0, abs=1e-5)


def test_sliders_round_trip_a_code(model):
    _, stats = model
    z = stats.codes[3].clone()
    n = len(latent_space.slider_specs(stats))
    values, residual = latents.to_sliders(stats, z, n, range_sd=100)
    assert len(values) == n and residual.shape == z.shape
    assert torch.allclose(latents.from_sliders(stats, values, residual), z, atol=1e-2)
    # the residual is orthogonal to the slider directions
    assert torch.allclose(stats.components[:n] @ residual, torch.zeros(n), atol=1e-4)


def test_slider_values_are_clipped_to_the_range(model):
    _, stats = model
    far = stats.mean + 50 * stats.component_sd[0] * stats.components[0]
    values, _ = latents.to_sliders(stats, far, 2)
    assert values[0] == latents.RANGE_SD


def test_moving_one_slider_moves_along_its_direction(model):
    _, stats = model
    res = torch.zeros_like(stats.mean)
    n = len(stats.components)
    base = [0.3 * (j + 1) for j in range(n)]
    a = latents.from_sliders(stats, base, res)
    for k in range(n):  # +1 on slider k moves the code by component_sd[k] * components[k]
        moved = list(base)
        moved[k] += 1.0
        b = latents.from_sliders(stats, moved, res)
        assert torch.allclose(b - a, stats.component_sd[k] * stats.components[k], atol=1e-5), k
    with pytest.raises(ValueError):
        latents.from_sliders(stats, [0.0] * (n + 1), res)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_each_slider_value_lands_on_its_own_direction(n):
    """Slider k at v, the others at 0: mean + residual + v * component_sd[k] * components[k], for every
    k (first and last included) and fewer sliders than directions (an off-by-one must not pass)."""
    stats = made_stats()
    residual = torch.tensor([0.5, -0.25, 0.0, 1.0, 0.1, -0.7])
    assert torch.equal(latents.from_sliders(stats, [0.0] * n, residual), stats.mean + residual)
    for k in range(n):
        values = [0.0] * n
        values[k] = -2.5
        expected = stats.mean + residual - 2.5 * stats.component_sd[k] * stats.components[k]
        torch.testing.assert_close(latents.from_sliders(stats, values, residual), expected, atol=1e-6, rtol=0)
    values = [1.0, -2.0, 0.5, 3.0][:n]  # all at once: the sum of the single moves
    expected = stats.mean + residual + sum(v * stats.component_sd[k] * stats.components[k]
                                           for k, v in enumerate(values))
    torch.testing.assert_close(latents.from_sliders(stats, values, residual), expected, atol=1e-6, rtol=0)


def test_to_sliders_reads_each_direction_in_its_sd():
    stats = made_stats()
    beyond = 0.8 * stats.components[2] - 0.4 * stats.components[3]  # outside the first two directions
    z = stats.mean + 1.2 * 2.0 * stats.components[0] - 0.6 * 1.5 * stats.components[1] + beyond
    values, residual = latents.to_sliders(stats, z, 2)
    assert values == [1.2, -0.6]
    torch.testing.assert_close(residual, beyond, atol=1e-6, rtol=0)
    torch.testing.assert_close(latents.from_sliders(stats, values, residual), z, atol=1e-6, rtol=0)
    values, _ = latents.to_sliders(stats, stats.mean + 9.0 * stats.components[1], 2)
    assert values == [0.0, latents.RANGE_SD]  # 9 / 1.5 = 6 SD: clipped to the slider's end


def test_start_codes(tiny_ckpt):
    d = tiny_ckpt.model_cfg.latent_dim
    assert torch.equal(generate.start_code(tiny_ckpt, "origin"), torch.zeros(d))
    p1 = generate.start_code(tiny_ckpt, "prior", temperature=0.5, seed=3)
    p2 = generate.start_code(tiny_ckpt, "prior", temperature=1.0, seed=3)
    assert p1.shape == (d,) and torch.allclose(2 * p1, p2)
    assert torch.equal(p1, generate.start_code(tiny_ckpt, "prior", temperature=0.5, seed=3))
    clip = Clip(digit_sound(1, 0, 0), TINY.sample_rate, "c")
    z = generate.start_code(tiny_ckpt, "clip", wave=clip.wave, sample_rate=clip.sample_rate)
    # the posterior mean of the clip's (first) window
    assert torch.equal(z, encode(tiny_ckpt, analyse(tiny_ckpt, clip.wave).specs[:1])[0][0])
    for kind, kw, msg in [("nope", {}, "unknown start"), ("prior", {"temperature": 0}, "positive"),
                          ("clip", {}, "no clip")]:
        with pytest.raises(ValueError, match=msg):
            generate.start_code(tiny_ckpt, kind, **kw)
    with pytest.raises(ValueError, match="Hz"):
        generate.encode_wave(tiny_ckpt, clip.wave, 16000)


def test_render_gives_spectrogram_and_audio(tiny_ckpt):
    z = torch.zeros(tiny_ckpt.model_cfg.latent_dim)
    r = generate.render(tiny_ckpt, z, "griffinlim", 4)
    assert r.db.shape == TINY.shape and r.wave.shape == (TINY.n_samples,)
    assert np.isfinite(r.wave).all() and np.abs(r.wave).max() <= 1.0
    lo, hi = generate.display_range(tiny_ckpt)
    assert (r.vmin, r.vmax) == (lo, hi) == (30.0 - TINY.top_db, 30.0)
    assert r.db.min() >= lo - 1e-4 and r.db.max() <= hi + 1e-4
    x = decode(tiny_ckpt, z)[0]
    np.testing.assert_allclose(r.db, x.numpy() * (hi - lo) + lo, atol=1e-4)
    zero = generate.render(tiny_ckpt, z, "zero")  # deterministic: the decoded spectrogram's inverse STFT
    np.testing.assert_array_equal(zero.wave, to_wave(tiny_ckpt, x, [(lo, hi)], phase="zero"))
    np.testing.assert_array_equal(zero.wave, generate.render(tiny_ckpt, z, "zero").wave)
    # Griffin-Lim starts from random phase: the same seed gives the same sound
    torch.manual_seed(7)
    a = generate.render(tiny_ckpt, z, "griffinlim", 4).wave
    torch.manual_seed(7)
    np.testing.assert_array_equal(a, generate.render(tiny_ckpt, z, "griffinlim", 4).wave)
    other = generate.render(tiny_ckpt, torch.full_like(z, 2.0), "zero").wave
    assert np.abs(other - zero.wave).max() > 1e-3  # another code, another sound


def test_interpolation_ends_at_the_endpoints(tiny_ckpt):
    d = tiny_ckpt.model_cfg.latent_dim
    za, zb = torch.zeros(d), torch.ones(d)
    rs = generate.render_many(tiny_ckpt, generate.interpolate(za, zb, 5), "griffinlim", 2)
    assert len(rs) == 5
    lo, hi = generate.display_range(tiny_ckpt)
    for r, z in ((rs[0], za), (rs[2], (za + zb) / 2), (rs[-1], zb)):
        assert np.allclose(r.db, decode(tiny_ckpt, z)[0].numpy() * (hi - lo) + lo, atol=1e-4)
    assert all(r.wave.shape == (TINY.n_samples,) for r in rs)
    for steps in (1, 33):
        with pytest.raises(ValueError, match="2 to 32"):
            generate.render_many(tiny_ckpt, generate.interpolate(za, zb, steps))


def test_join_waves_puts_gaps_between_clips():
    w = [np.ones(100, np.float32), np.ones(50, np.float32)]
    out = audio.join_waves(w, 1000, gap_s=0.01)
    assert out.shape == (160,) and out[100:110].sum() == 0
    assert audio.join_waves([], 1000).shape == (0,)


def test_endpoints(model, tmp_path):
    ck, stats = model
    path = write_wav(tmp_path / "x.wav", digit_sound(2, 1, 0))
    choices = latent_space.endpoint_choices(stats, [("x.wav", str(path))])
    keys = [k for _, k in choices]
    assert "label:0" in keys and f"example:{path}" in keys and "origin" in keys and "prior" in keys
    assert torch.equal(latent_space.endpoint_code(ck, stats, "label:1"), stats.label_means[1])
    clip = Clip(digit_sound(2, 1, 0), TINY.sample_rate, "x.wav")
    torch.testing.assert_close(latent_space.endpoint_code(ck, stats, f"example:{path}"),
                               generate.encode_wave(ck, clip.wave, clip.sample_rate),
                               atol=1e-3, rtol=0)  # the file is 16-bit: nearly the same audio
    assert torch.equal(latent_space.endpoint_code(ck, stats, "origin"), torch.zeros_like(stats.mean))
    for key, msg in [("label:9", "not known"), ("bogus", "unknown"), ("", "choose")]:
        with pytest.raises(ValueError, match=msg):
            latent_space.endpoint_code(ck, stats, key)


def test_checkpoint_map_uses_saved_codes(model):
    _, stats = model
    m = latents.checkpoint_map(stats)
    assert m.xy.shape == (len(stats.codes), 2) and m.store_indices is None
    assert len(m.labels) == len(m.names) == len(m.xy)
    # the map's axes are sliders 1 and 2: a code's map position equals its slider values
    values, _ = latents.to_sliders(stats, stats.codes[0], 2, range_sd=1e9)
    assert np.allclose(m.xy[0], values, atol=1e-2)
    with pytest.raises(ValueError, match="no saved latent codes"):
        latents.checkpoint_map(latents.prior_stats(4))


def test_store_map_encodes_store_clips(model, tiny_store, tiny_ckpt):
    ck, stats = model
    m = latents.store_map(ck, stats, tiny_store, max_points=10)
    assert m.xy.shape == (10, 2) and len(m.store_indices) == 10
    assert m.names[0] == tiny_store.clip_name(m.store_indices[0])
    wide = latents.prior_stats(4)
    other = type(tiny_ckpt)(tiny_ckpt.model, TINY.replace(n_fft=128, ref_db=30.0), tiny_ckpt.model_cfg,
                            tiny_ckpt.train_cfg)
    with pytest.raises(ValueError, match="expects"):
        latents.store_map(other, wide, tiny_store)
