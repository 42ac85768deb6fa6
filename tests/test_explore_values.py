"""Exact values of latent exploration (vae.latents, vae.generate, studio.latent_space): stand-in
statistics, slider specs and readings, display ranges,
rendering paths, interpolation steps, joined audio, interpolation ends and map coordinates.

Every expected value here is written out independently of the code under test (from the
definitions in the docstrings), on statistics and checkpoints built with known parts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, digit_sound, tiny_model_cfg, write_wav

from preprocessing import audio
from preprocessing.audio import AudioError, resample
from studio import latent_space
from studio.clips import Clip
from vae import generate, latents
from vae.checkpoint import Checkpoint, load_checkpoint
from vae.config import TrainConfig
from vae.generate import decode, sample, to_wave
from vae.latents import LatentStats, encode_indices, load_latent_stats
from vae.model import VAE

SDS = [2.0, 1.5, 0.7, 0.3]  # distinct spreads, two of them below 1
EXPLAINED = [0.6, 0.25, 0.1, 0.05]  # 2 directions cover 80%, all 4 cover 100%


def known_stats(d: int = 6, codes: torch.Tensor | None = None, labels: list[str] | None = None) -> LatentStats:
    """Statistics with known parts: orthonormal non-axis directions, the spreads SDS, shares EXPLAINED."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(11)))
    labels = labels or []
    codes = torch.zeros(0, d) if codes is None else codes
    return LatentStats(mean=torch.linspace(-1.0, 1.0, d), components=q.T[:4].contiguous(),
                       component_sd=torch.tensor(SDS), explained=torch.tensor(EXPLAINED), label_names=labels,
                       label_means=torch.arange(len(labels) * d, dtype=torch.float32).reshape(len(labels), d),
                       codes=codes, code_labels=[f"l{i}" for i in range(len(codes))],
                       code_names=[f"c{i}.wav" for i in range(len(codes))])


def code_at(stats: LatentStats, coords: list[float], extra: torch.Tensor | None = None) -> torch.Tensor:
    """mean + sum_k coords[k] * components[k] (+ extra): a code with known coordinates."""
    z = stats.mean.clone()
    for k, c in enumerate(coords):
        z = z + c * stats.components[k]
    return z if extra is None else z + extra


@pytest.fixture(scope="module")
def model(trained):
    return load_checkpoint(trained[0]), load_latent_stats(trained[0])


def ckpt(**spec) -> Checkpoint:
    """An untrained tiny model with the given spectrogram settings (meta via ``meta=``)."""
    meta = spec.pop("meta", {})
    torch.manual_seed(0)
    cfg = tiny_model_cfg()
    return Checkpoint(VAE(cfg).eval(), TINY.replace(**spec) if spec else TINY, cfg, TrainConfig(), meta)


# --- stand-in statistics -----------------------------------------------------------------------

def test_prior_stats_are_the_prior_axes_with_no_labels_or_codes():
    s = latents.prior_stats(10, k=3)
    assert torch.equal(s.mean, torch.zeros(10))
    assert torch.equal(s.components, torch.eye(10)[:3])
    assert torch.equal(s.component_sd, torch.ones(3))
    # each axis of an isotropic prior holds 1/D of the variance, whatever k is
    assert torch.equal(s.explained, torch.full((3,), 0.1))
    assert s.covered(3) == pytest.approx(0.3)
    assert s.label_names == [] and s.label_means.shape == (0, 10)
    assert s.codes.shape == (0, 10) and s.code_labels == [] and s.code_names == []
    # the sliders read a code's first k coordinates; nothing else is offered
    z = torch.arange(10, dtype=torch.float32) / 10
    values, residual = latents.to_sliders(s, z, 3)
    assert values == [0.0, 0.1, 0.2]
    assert torch.equal(residual, torch.cat([torch.zeros(3), z[3:]]))
    assert latent_space.endpoint_choices(s, []) == [("origin (centre of the prior)", "origin"),
                                               ("random sample from the prior", "prior")]
    small = latents.prior_stats(4)  # k defaults to MAX_SLIDERS, capped at the latent size
    assert torch.equal(small.components, torch.eye(4)) and torch.equal(small.explained, torch.full((4,), 0.25))


# --- slider specs ------------------------------------------------------------------------------

def test_slider_specs_exact_labels_and_ranges():
    s = known_stats()
    assert latent_space.slider_specs(s) == [  # default coverage 0.8: 60% + 25% reach it
        latent_space.SliderSpec(0, "Direction 1 (60% of the variation)", -3.0, 3.0),
        latent_space.SliderSpec(1, "Direction 2 (25% of the variation)", -3.0, 3.0),
    ]
    specs = latent_space.slider_specs(s, coverage=0.99, range_sd=2.5)
    assert [(p.index, p.label, p.minimum, p.maximum) for p in specs] == [
        (0, "Direction 1 (60% of the variation)", -2.5, 2.5),
        (1, "Direction 2 (25% of the variation)", -2.5, 2.5),
        (2, "Direction 3 (10% of the variation)", -2.5, 2.5),
        (3, "Direction 4 (5% of the variation)", -2.5, 2.5),
    ]
    assert [p.index for p in latent_space.slider_specs(s, coverage=0.99, cap=3)] == [0, 1, 2]  # the cap binds
    assert [p.index for p in latent_space.slider_specs(s, coverage=0.5)] == [0]
    assert s.covered(2) == pytest.approx(0.85) and s.covered(0) == 0.0


# --- slider values <-> codes -------------------------------------------------------------------

def test_to_sliders_reads_every_direction_in_its_own_sd():
    s = known_stats()
    extra = torch.zeros(6)
    coords = [1.0 * 2.0, -0.5 * 1.5, 0.8 * 0.7, -2.0 * 0.3]  # 1, -0.5, 0.8, -2 SD
    values, residual = latents.to_sliders(s, code_at(s, coords, extra), 4)
    assert values == pytest.approx([1.0, -0.5, 0.8, -2.0], abs=1e-6)
    torch.testing.assert_close(residual, torch.zeros(6), atol=1e-6, rtol=0)


def test_to_sliders_rounds_to_three_decimals_and_clips_both_ends():
    s = known_stats()
    values, _ = latents.to_sliders(s, code_at(s, [1.23456 * 2.0, -9.0 * 1.5]), 2)
    assert values == [1.235, -3.0]  # 3 decimals; -9 SD is clipped to the low end
    values, _ = latents.to_sliders(s, code_at(s, [-1.0, 9.0]), 2, range_sd=2.0)
    assert values == [-0.5, 2.0]


def test_to_sliders_takes_lists_and_float64_and_gives_float32():
    s = known_stats()
    z = code_at(s, [2.0, 0.0, 0.0, 0.0], 0.1 * s.components[3])
    for given in (z.double(), z.numpy().astype(np.float64), z.tolist()):
        values, residual = latents.to_sliders(s, given, 2)
        assert values == [1.0, 0.0]
        assert residual.dtype == torch.float32 and residual.shape == (6,)


def test_to_sliders_with_a_zero_spread_direction_reads_zero():
    s = known_stats()
    s.component_sd = torch.tensor([2.0, 0.0, 0.7, 0.3])
    values, _ = latents.to_sliders(s, s.mean, 2)
    assert values == [0.0, 0.0]  # not 0 / 0 = NaN


def test_from_sliders_gives_float32_codes_and_checks_the_count():
    s = known_stats()
    z = latents.from_sliders(s, [1, -2], torch.ones(6, dtype=torch.float64))
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, s.mean + 1 + 2.0 * s.components[0] - 3.0 * s.components[1], atol=1e-6, rtol=0)
    z4 = latents.from_sliders(s, [0.0, 0.0, 0.0, 1.0], np.zeros((1, 6)))  # all four directions; (1, D) residual
    torch.testing.assert_close(z4, s.mean + 0.3 * s.components[3], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"^5 slider values but only 4 directions$"):
        latents.from_sliders(s, [0.0] * 5, torch.zeros(6))


# --- start codes and display range -------------------------------------------------------------

def test_prior_start_defaults_to_temperature_one(tiny_ckpt):
    z = generate.start_code(tiny_ckpt, "prior", seed=4)
    assert torch.equal(z, sample(tiny_ckpt, 1, 1.0, 4)[0])
    assert torch.equal(generate.start_code(tiny_ckpt, "prior", temperature=0.25, seed=4), 0.25 * z)
    with pytest.raises(ValueError, match=r"^temperature must be positive, got -1\.0$"):
        generate.start_code(tiny_ckpt, "prior", temperature=-1.0)
    with pytest.raises(ValueError, match=r"^unknown start 'Origin'; use 'origin', 'prior' or 'clip'$"):
        generate.start_code(tiny_ckpt, "Origin")
    with pytest.raises(ValueError, match=r"^no clip to start from: pick an example, upload a file or click the map$"):
        generate.start_code(tiny_ckpt, "clip")


def test_unseeded_prior_starts_are_successive_draws(tiny_ckpt):
    """Without a seed, prior starts come from torch's global generator, one code per call: under
    torch.manual_seed the sequence of starts is reproducible and matches plain draws of (1, D)."""
    d = tiny_ckpt.model_cfg.latent_dim
    torch.manual_seed(21)
    starts = [generate.start_code(tiny_ckpt, "prior", temperature=0.5) for _ in range(3)]
    torch.manual_seed(21)
    draws = [0.5 * torch.randn(1, d)[0] for _ in range(3)]
    for z, expected in zip(starts, draws):
        assert torch.equal(z, expected)


def test_clip_start_is_the_first_window(tiny_ckpt):
    """A clip longer than one window starts from its first window's code, not the second's."""
    n = TINY.n_samples
    first, second = (w[:n] * 0.5 / np.abs(w[:n]).max() for w in (digit_sound(0, 0, 0), digit_sound(1, 1, 0)))
    long = Clip(np.concatenate([first, second]), TINY.sample_rate, "two windows")
    z = generate.start_code(tiny_ckpt, "clip", wave=long.wave, sample_rate=long.sample_rate)
    one = generate.encode_wave(tiny_ckpt, first, TINY.sample_rate)
    other = generate.encode_wave(tiny_ckpt, second, TINY.sample_rate)
    torch.testing.assert_close(z, one, atol=1e-5, rtol=0)
    assert (z - other).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"^clip is at 16000 Hz, the model at 8000 Hz$"):
        generate.encode_wave(tiny_ckpt, first, 16000)


def test_display_range_for_each_normalisation():
    assert generate.display_range(ckpt(ref_db=12.5, top_db=50.0)) == (-37.5, 12.5)
    # per-clip normalisation: the trained model's typical range, or -40..30 dB without one
    assert generate.display_range(ckpt(normalisation="clip", ref_db=12.5, meta={"typical_range": [-55, 5]})) \
        == (-55.0, 5.0)
    assert generate.display_range(ckpt(normalisation="clip", ref_db=12.5)) == (-40.0, 30.0)
    # a global model without a reference level (ref_db unset) falls back the same way
    assert generate.display_range(ckpt(meta={"typical_range": [-20.0, 10.0]})) == (-20.0, 10.0)
    assert generate.display_range(ckpt()) == (-40.0, 30.0)
    lo, hi = generate.display_range(ckpt(normalisation="clip", meta={"typical_range": [-55, 5]}))
    assert type(lo) is float and type(hi) is float


# --- rendering ---------------------------------------------------------------------------------

def test_render_uses_the_display_range_and_the_given_iterations():
    ck = ckpt(meta={"typical_range": [-20.0, 10.0]})  # no ref_db: only the display range can scale it
    z = torch.linspace(-1, 1, 4)
    x = decode(ck, z)[0]
    r = generate.render(ck, z, "zero")
    assert (r.vmin, r.vmax) == (-20.0, 10.0)
    np.testing.assert_allclose(r.db, x.numpy() * 30.0 - 20.0, atol=1e-5)
    np.testing.assert_array_equal(r.wave, to_wave(ck, x, [(-20.0, 10.0)], phase="zero"))
    torch.manual_seed(3)
    two = to_wave(ck, x, [(-20.0, 10.0)], phase="griffinlim", n_iter=2)
    torch.manual_seed(3)
    np.testing.assert_array_equal(generate.render(ck, z, "griffinlim", 2).wave, two)
    torch.manual_seed(3)
    default = to_wave(ck, x, [(-20.0, 10.0)])  # the model's own phase method and iterations
    torch.manual_seed(3)
    np.testing.assert_array_equal(generate.render(ck, z).wave, default)


def test_interpolation_steps_are_evenly_spaced_and_rendered_alike(tiny_ckpt):
    d = tiny_ckpt.model_cfg.latent_dim
    za, zb = torch.full((d,), -1.0), torch.linspace(0.5, 2.0, d)
    lo, hi = generate.display_range(tiny_ckpt)
    rs = generate.render_many(tiny_ckpt, generate.interpolate(za, zb, 4), "zero")
    for r, t in zip(rs, (0.0, 1 / 3, 2 / 3, 1.0)):
        x = decode(tiny_ckpt, (1 - t) * za + t * zb)[0]
        np.testing.assert_allclose(r.db, x.numpy() * (hi - lo) + lo, atol=1e-4)
        np.testing.assert_allclose(r.wave, to_wave(tiny_ckpt, x, [(lo, hi)], phase="zero"), atol=1e-5)
        assert (r.vmin, r.vmax) == (lo, hi)
    torch.manual_seed(5)
    gl = generate.render_many(tiny_ckpt, generate.interpolate(za, zb, 2), "griffinlim", 3)
    torch.manual_seed(5)
    for r, z in zip(gl, (za, zb)):
        expected = to_wave(tiny_ckpt, decode(tiny_ckpt, z)[0], [(lo, hi)], phase="griffinlim", n_iter=3)
        np.testing.assert_allclose(r.wave, expected, atol=1e-5)


@pytest.mark.parametrize("steps", [2, 32])
def test_interpolation_step_limits_are_inclusive(tiny_ckpt, steps):
    d = tiny_ckpt.model_cfg.latent_dim
    rs = generate.render_many(tiny_ckpt, generate.interpolate(torch.zeros(d), torch.ones(d), steps), "zero")
    assert len(rs) == steps


@pytest.mark.parametrize("steps", [0, 1, 33])
def test_interpolation_step_limits_message(tiny_ckpt, steps):
    d = tiny_ckpt.model_cfg.latent_dim
    with pytest.raises(ValueError, match=rf"^interpolation takes 2 to 32 steps, got {steps}$"):
        generate.render_many(tiny_ckpt, generate.interpolate(torch.zeros(d), torch.ones(d), steps))


# --- joining audio -----------------------------------------------------------------------------

def test_join_waves_exact_layout_and_dtype():
    a, b, c = np.full(5, 0.5), np.full(3, -0.25), np.arange(4, dtype=np.float64)
    out = audio.join_waves([a, b, c], 100, gap_s=0.02)  # 2 samples of silence between clips
    expected = np.concatenate([a, [0, 0], b, [0, 0], c]).astype(np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    default = audio.join_waves([np.ones(10, np.float32), np.ones(10, np.float32)], 1000)  # 0.15 s gap
    assert default.shape == (170,) and default[10:160].sum() == 0 and default[160:].sum() == 10
    single = audio.join_waves([np.ones(7, np.float32)], 1000)
    np.testing.assert_array_equal(single, np.ones(7, np.float32))
    empty = audio.join_waves([], 1000)
    assert empty.shape == (0,) and empty.dtype == np.float32


# --- interpolation ends ------------------------------------------------------------------------

def test_endpoint_choices_exact_list():
    s = known_stats(labels=["one", "two"])
    assert latent_space.endpoint_choices(s, [("a.wav", "/ex/a.wav"), ("b.wav", "/ex/b.wav")]) == [
        ("average of label 'one'", "label:one"), ("average of label 'two'", "label:two"),
        ("example clip a.wav", "example:/ex/a.wav"), ("example clip b.wav", "example:/ex/b.wav"),
        ("origin (centre of the prior)", "origin"), ("random sample from the prior", "prior"),
    ]


def test_endpoint_codes_for_every_kind_of_key(tmp_path, tiny_ckpt):
    s = known_stats(d=4, labels=["one", "two"])
    label = latent_space.endpoint_code(tiny_ckpt, s, "label:two")
    assert torch.equal(label, s.label_means[1])
    label += 1  # a copy: changing it leaves the statistics alone
    assert torch.equal(s.label_means[1], torch.arange(4, 8, dtype=torch.float32))
    assert torch.equal(latent_space.endpoint_code(tiny_ckpt, s, "prior", seed=9), sample(tiny_ckpt, 1, 1.0, 9)[0])
    assert torch.equal(latent_space.endpoint_code(tiny_ckpt, s, "origin"), torch.zeros(4))
    # an example file at another rate is resampled to the model's rate before encoding
    wave = digit_sound(0, 0, 0)[:2000]
    path = write_wav(tmp_path / "x16k.wav", resample(wave, TINY.sample_rate, 16000), sr=16000, subtype="FLOAT")
    code = latent_space.endpoint_code(tiny_ckpt, s, f"example:{path}")
    near = generate.encode_wave(tiny_ckpt, wave, TINY.sample_rate)
    assert code.shape == (4,) and (code - near).abs().max() < 0.05
    # a file shorter than one STFT frame cannot be encoded: the reason names the frame
    short = write_wav(tmp_path / "short.wav", wave[:TINY.n_fft - 1])
    with pytest.raises(AudioError, match="less than one STFT frame"):
        latent_space.endpoint_code(tiny_ckpt, s, f"example:{short}")
    ok = write_wav(tmp_path / "frame.wav", wave[:TINY.n_fft], subtype="FLOAT")
    torch.testing.assert_close(latent_space.endpoint_code(tiny_ckpt, s, f"example:{ok}"),
                               generate.encode_wave(tiny_ckpt, wave[:TINY.n_fft], TINY.sample_rate))


def test_endpoint_code_messages(tiny_ckpt):
    s = known_stats(d=4, labels=["one", "two"])
    for key, msg in [("", r"^choose both ends of the interpolation$"),
                     ("label:three", r"^label 'three' is not known to this model \(labels: \['one', 'two'\]\)$"),
                     ("Origin", r"^unknown interpolation end 'Origin'$"),
                     ("one", r"^unknown interpolation end 'one'$")]:
        with pytest.raises(ValueError, match=msg):
            latent_space.endpoint_code(tiny_ckpt, s, key)


# --- maps --------------------------------------------------------------------------------------

def test_checkpoint_map_coordinates_are_slider_values():
    s = known_stats(codes=torch.zeros(3, 6))
    s.component_sd = torch.tensor([0.5, 0.25, 0.7, 0.3])  # spreads below 1 SD unit
    s.codes = torch.stack([code_at(s, [0.5, -0.25]), code_at(s, [0.5, 0.75]), code_at(s, [-1.0, 0.0])])
    m = latents.checkpoint_map(s)
    # coordinate / SD: (1, -1), (1, 3), (-2, 0); the map is not clipped to the slider range
    np.testing.assert_allclose(m.xy, [[1.0, -1.0], [1.0, 3.0], [-2.0, 0.0]], atol=1e-5)
    assert m.xy.shape == (3, 2)
    assert torch.equal(m.codes, s.codes)
    assert m.labels == ["l0", "l1", "l2"] and m.names == ["c0.wav", "c1.wav", "c2.wav"]
    assert m.store_indices is None and m.store is None
    s.codes = s.codes[:1]
    np.testing.assert_allclose(latents.checkpoint_map(s).xy, [[1.0, -1.0]], atol=1e-5)  # a single code maps


def test_map_needs_two_directions_and_codes():
    s = known_stats(codes=torch.zeros(2, 6))
    s.components, s.component_sd = s.components[:2], s.component_sd[:2]
    assert latents.checkpoint_map(s).xy.shape == (2, 2)  # exactly two directions is enough
    s.components, s.component_sd = s.components[:1], s.component_sd[:1]
    with pytest.raises(ValueError, match=r"^the model's latent statistics have fewer than two directions; "
                                         r"no 2-D map$"):
        latents.checkpoint_map(s)
    with pytest.raises(ValueError, match=r"^this checkpoint has no saved latent codes \(latents\.safetensors\); "
                                         r"pick a dataset store to map instead$"):
        latents.checkpoint_map(known_stats())


def test_store_map_places_store_clips_like_the_stats(model, tiny_store):
    ck, stats = model
    m = latents.store_map(ck, stats, tiny_store)  # 36 clips, under the default cap: all of them
    idx = list(range(len(tiny_store)))
    assert m.store_indices == idx and m.store == str(tiny_store.path)
    codes = encode_indices(ck.model, tiny_store.specs, idx)
    torch.testing.assert_close(m.codes, codes)
    expected = (stats.project(codes, 2) / stats.component_sd[:2]).numpy()
    np.testing.assert_allclose(m.xy, expected, atol=1e-5)
    assert m.labels == [c["label"] for c in tiny_store.clips]
    assert m.names == [tiny_store.clip_name(i) for i in idx]


def test_store_map_subsample_is_seeded_and_without_repeats(model, tiny_store):
    ck, stats = model
    m = latents.store_map(ck, stats, tiny_store, max_points=30)
    picked = sorted(np.random.default_rng(0).choice(list(range(36)), 30, replace=False).tolist())
    assert m.store_indices == picked and len(set(picked)) == 30
    assert m.names == [tiny_store.clip_name(i) for i in picked]
    other = latents.store_map(ck, stats, tiny_store, max_points=30, seed=1).store_indices
    assert other == sorted(np.random.default_rng(1).choice(list(range(36)), 30, replace=False).tolist())
    exact = latents.store_map(ck, stats, tiny_store, max_points=36)  # at the cap: every clip
    assert exact.store_indices == list(range(36))


class ManyClips:
    """A store-shaped stand-in with ``n`` clips (the real Store for 1500+ clips is slow to build)."""

    def __init__(self, n: int, path):
        self.config, self.path = TINY, path
        self.specs = np.random.default_rng(0).random((n, *TINY.shape), dtype=np.float32)
        self.rows = self.specs  # a Store's rows read like its specs: store[rows] -> (len(rows), F, T)
        self.clips = [{"label": str(i % 3)} for i in range(n)]

    def indices(self):
        return list(range(len(self.clips)))

    def clip_name(self, i):
        return f"clip{i}.wav"


@pytest.mark.parametrize("n, kept", [(1500, 1500), (1501, 1500)])
def test_store_map_default_cap_is_1500_points(tmp_path, tiny_ckpt, n, kept):
    stats = latents.prior_stats(4)
    m = latents.store_map(tiny_ckpt, stats, ManyClips(n, tmp_path / "many"))
    assert len(m.store_indices) == kept and len(m.xy) == kept
    if n > kept:
        assert m.store_indices == sorted(np.random.default_rng(0).choice(n, kept, replace=False).tolist())


def test_store_map_shape_mismatch_message(tiny_store, tiny_ckpt):
    other = Checkpoint(tiny_ckpt.model, TINY.replace(n_fft=128, ref_db=30.0), tiny_ckpt.model_cfg, TrainConfig())
    msg = (rf"^store {tiny_store.path.name} has 32x64 spectrograms, the model expects 64x64: "
           r"pick a store built with the model's settings$")
    with pytest.raises(ValueError, match=msg):
        latents.store_map(other, latents.prior_stats(4), tiny_store)
