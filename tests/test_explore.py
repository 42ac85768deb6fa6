"""Latent exploration (vae.explore): sliders <-> codes, start points, rendering, interpolation, maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, digit_sound, write_wav

from vae import explore
from vae.checkpoint import load_checkpoint
from vae.clips import Clip
from vae.generate import decode
from vae.latents import load_latent_stats


@pytest.fixture(scope="module")
def model(trained):
    out = trained[0]
    return load_checkpoint(out), load_latent_stats(out)


def test_prior_stats_shapes():
    s = explore.prior_stats(4)
    assert s.components.shape == (4, 4) and s.component_sd.tolist() == [1.0] * 4
    assert len(explore.slider_specs(s)) <= 4
    assert explore.prior_stats(32).components.shape == (explore.MAX_SLIDERS, 32)


def test_slider_specs_cover_variance_and_are_capped(model):
    _, stats = model
    specs = explore.slider_specs(stats)
    assert 1 <= len(specs) <= min(explore.MAX_SLIDERS, len(stats.components))
    assert all(s.minimum == -explore.RANGE_SD and s.maximum == explore.RANGE_SD for s in specs)
    assert "% of the variation" in specs[0].label
    assert len(explore.slider_specs(stats, coverage=0.99, cap=2)) <= 2
    assert explore.covered(stats, len(stats.components)) == pytest.approx(1.0, abs=1e-5)


def test_sliders_round_trip_a_code(model):
    _, stats = model
    z = stats.codes[3].clone()
    n = len(explore.slider_specs(stats))
    values, residual = explore.to_sliders(stats, z, n, range_sd=100)
    assert len(values) == n and residual.shape == z.shape
    assert torch.allclose(explore.from_sliders(stats, values, residual), z, atol=1e-2)
    # the residual is orthogonal to the slider directions
    assert torch.allclose(stats.components[:n] @ residual, torch.zeros(n), atol=1e-4)


def test_slider_values_are_clipped_to_the_range(model):
    _, stats = model
    far = stats.mean + 50 * stats.component_sd[0] * stats.components[0]
    values, _ = explore.to_sliders(stats, far, 2)
    assert values[0] == explore.RANGE_SD


def test_moving_one_slider_moves_along_its_direction(model):
    _, stats = model
    res = torch.zeros_like(stats.mean)
    a = explore.from_sliders(stats, [0.0, 0.0], res)
    b = explore.from_sliders(stats, [1.0, 0.0], res)
    assert torch.allclose(b - a, stats.component_sd[0] * stats.components[0], atol=1e-5)
    with pytest.raises(ValueError):
        explore.from_sliders(stats, [0.0] * (len(stats.components) + 1), res)


def test_start_codes(tiny_ckpt):
    d = tiny_ckpt.model_cfg.latent_dim
    assert torch.equal(explore.start_code(tiny_ckpt, "origin"), torch.zeros(d))
    p1 = explore.start_code(tiny_ckpt, "prior", temperature=0.5, seed=3)
    p2 = explore.start_code(tiny_ckpt, "prior", temperature=1.0, seed=3)
    assert p1.shape == (d,) and torch.allclose(2 * p1, p2)
    clip = Clip(digit_sound(1, 0, 0), TINY.sample_rate, "c")
    z = explore.start_code(tiny_ckpt, "clip", clip=clip)
    assert z.shape == (d,) and torch.isfinite(z).all()
    for kind, kw, msg in [("nope", {}, "unknown start"), ("prior", {"temperature": 0}, "positive"),
                          ("clip", {}, "no clip")]:
        with pytest.raises(ValueError, match=msg):
            explore.start_code(tiny_ckpt, kind, **kw)
    with pytest.raises(ValueError, match="Hz"):
        explore.encode_clip(tiny_ckpt, Clip(clip.wave, 16000, "c"))


def test_render_gives_spectrogram_and_audio(tiny_ckpt):
    z = torch.zeros(tiny_ckpt.model_cfg.latent_dim)
    r = explore.render(tiny_ckpt, z, "griffinlim", 4)
    assert r.db.shape == TINY.shape and r.wave.shape == (TINY.n_samples,)
    assert np.isfinite(r.wave).all() and np.abs(r.wave).max() <= 1.0
    lo, hi = explore.display_range(tiny_ckpt)
    assert (r.vmin, r.vmax) == (lo, hi) == (30.0 - TINY.top_db, 30.0)
    assert r.db.min() >= lo - 1e-4 and r.db.max() <= hi + 1e-4
    assert explore.render(tiny_ckpt, z, "zero").wave.shape == (TINY.n_samples,)


def test_interpolation_ends_at_the_endpoints(tiny_ckpt):
    d = tiny_ckpt.model_cfg.latent_dim
    za, zb = torch.zeros(d), torch.ones(d)
    rs = explore.interpolation(tiny_ckpt, za, zb, 5, "griffinlim", 2)
    assert len(rs) == 5
    lo, hi = explore.display_range(tiny_ckpt)
    assert np.allclose(rs[-1].db, decode(tiny_ckpt, zb)[0].numpy() * (hi - lo) + lo, atol=1e-4)
    assert all(r.wave.shape == (TINY.n_samples,) for r in rs)
    for steps in (1, 33):
        with pytest.raises(ValueError, match="2 to 32"):
            explore.interpolation(tiny_ckpt, za, zb, steps)


def test_join_waves_puts_gaps_between_clips():
    w = [np.ones(100, np.float32), np.ones(50, np.float32)]
    out = explore.join_waves(w, 1000, gap_s=0.01)
    assert out.shape == (160,) and out[100:110].sum() == 0
    assert explore.join_waves([], 1000).shape == (0,)


def test_endpoints(model, tmp_path):
    ck, stats = model
    path = write_wav(tmp_path / "x.wav", digit_sound(2, 1, 0))
    choices = explore.endpoint_choices(stats, [("x.wav", str(path))])
    keys = [k for _, k in choices]
    assert "label:0" in keys and f"example:{path}" in keys and "origin" in keys and "prior" in keys
    assert torch.equal(explore.endpoint_code(ck, stats, "label:1"), stats.label_means[1])
    assert explore.endpoint_code(ck, stats, f"example:{path}").shape == stats.mean.shape
    assert torch.equal(explore.endpoint_code(ck, stats, "origin"), torch.zeros_like(stats.mean))
    for key, msg in [("label:9", "not known"), ("bogus", "unknown"), ("", "choose")]:
        with pytest.raises(ValueError, match=msg):
            explore.endpoint_code(ck, stats, key)


def test_checkpoint_map_uses_saved_codes(model):
    _, stats = model
    m = explore.checkpoint_map(stats)
    assert m.xy.shape == (len(stats.codes), 2) and m.store_indices is None
    assert len(m.labels) == len(m.names) == len(m.xy)
    # the map's axes are sliders 1 and 2: a code's map position equals its slider values
    values, _ = explore.to_sliders(stats, stats.codes[0], 2, range_sd=1e9)
    assert np.allclose(m.xy[0], values, atol=1e-2)
    with pytest.raises(ValueError, match="no saved latent codes"):
        explore.checkpoint_map(explore.prior_stats(4))


def test_store_map_encodes_store_clips(model, tiny_store, tiny_ckpt):
    ck, stats = model
    m = explore.store_map(ck, stats, tiny_store, max_points=10)
    assert m.xy.shape == (10, 2) and len(m.store_indices) == 10
    assert m.names[0] == tiny_store.clip_name(m.store_indices[0])
    wide = explore.prior_stats(4)
    other = type(tiny_ckpt)(tiny_ckpt.model, TINY.replace(n_fft=128, ref_db=30.0), tiny_ckpt.model_cfg,
                            tiny_ckpt.train_cfg)
    with pytest.raises(ValueError, match="expects"):
        explore.store_map(other, wide, tiny_store)
