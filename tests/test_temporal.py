"""The temporal architecture (issue #11): a latent with a time axis, its losses, and how generation,
latent statistics and checkpoints handle sequences (D, T')."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from conftest import TINY, TRAIN_KW

from preprocessing.config import ConfigError
from preprocessing.errors import InputError
from vae import generate
from vae.checkpoint import Checkpoint, load_checkpoint
from vae.config import ModelConfig, TrainConfig, model_config, train_config
from vae.latents import from_sliders, prior_stats, stats_from_codes, to_sliders, zero_sliders
from vae.losses import spectral_loss, vae_loss
from vae.model import VAE


def tiny_temporal(latent_dim: int = 4, norm: str = "weight") -> ModelConfig:
    """A small temporal VAE for the 32x64 TINY spectrograms: latent (4, 16)."""
    return ModelConfig(n_freq=32, n_frames=64, channels=(16, 24), strides=((1, 2), (1, 2)), decoder_channels=(16,),
                       kernel=3, latent_dim=latent_dim, kind="temporal", res_blocks=1, norm=norm)


@pytest.fixture
def temporal_ckpt() -> Checkpoint:
    torch.manual_seed(0)
    cfg = tiny_temporal()
    return Checkpoint(VAE(cfg).eval(), TINY.replace(ref_db=30.0), cfg, TrainConfig())


# ---- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "latent"), [((128, 96), (32, 48)), ((512, 256), (64, 128))])
def test_preset_shapes(shape, latent):
    cfg = model_config("temporal", shape)
    assert (cfg.kind, cfg.time_ratio, cfg.latent_shape) == ("temporal", 2, latent)
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        x_hat, mu, logvar = VAE(cfg)(x)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (2, *latent)
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1


def test_temporal_preset_trains_with_the_spectral_term():
    tc = train_config("temporal", (128, 96))
    assert tc.spectral_weight > 0 and tc.recon_weight == 10.0 * 128 * 96
    assert train_config("default", (128, 96)).spectral_weight == 0  # the other presets are as they were
    assert train_config("study", (128, 96)).spectral_weight == 0


def test_global_config_json_is_as_before_the_temporal_fields():
    d = model_config("default", (128, 96)).to_dict()
    assert not {"kind", "res_blocks", "norm"} & set(d)  # a global model's config.json did not change
    assert ModelConfig.from_dict(d) == model_config("default", (128, 96))
    t = tiny_temporal().to_dict()
    assert (t["kind"], t["res_blocks"], t["norm"]) == ("temporal", 1, "weight")
    assert ModelConfig.from_dict(t) == tiny_temporal()
    assert "spectral_weight" not in TrainConfig().to_dict()
    assert TrainConfig(spectral_weight=2.0).to_dict()["spectral_weight"] == 2.0


@pytest.mark.parametrize(("changes", "message"), [
    ({"strides": ((2, 2), (1, 2))}, "frequency strides of 1"),
    ({"res_blocks": -1}, "res_blocks must be at least 0, got -1"),
    ({"norm": "batch"}, "norm must be 'weight' or 'group'"),
    ({"kind": "spiral"}, "kind must be one of"),
    ({"n_frames": 66}, "n_frames by 4"),
])
def test_bad_temporal_configs(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(tiny_temporal(), **changes).validate()
    with pytest.raises(ConfigError, match="batch norm and no residual blocks"):
        dataclasses.replace(model_config("default", (128, 96)), norm="weight").validate()
    with pytest.raises(ConfigError, match="spectral_weight must be non-negative"):
        TrainConfig(spectral_weight=-1).validate()


# ---- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["weight", "group"])
def test_any_length_that_divides_by_the_ratio(norm):
    model = VAE(tiny_temporal(norm=norm)).eval()
    for frames in (4, 64, 200):
        mu, _ = model.encode(torch.rand(1, 1, 32, frames))
        assert mu.shape == (1, 4, frames // 4)
        assert model.decode(mu).shape == (1, 1, 32, frames)


@pytest.mark.parametrize("norm", ["weight", "group"])
def test_no_batch_statistics(norm):
    """A clip's code does not depend on the other clips of its batch, in training mode too."""
    torch.manual_seed(0)
    model = VAE(tiny_temporal(norm=norm)).train()
    x = torch.rand(5, 1, 32, 64)
    torch.testing.assert_close(model.encode(x[:1])[0], model.encode(x)[0][:1], rtol=1e-5, atol=1e-6)


def test_upsampling_leaves_no_checkerboard():
    """A constant latent decodes to a spectrogram constant along time away from the ends: nearest
    repeat + conv has no stride-periodic pattern (a stride-2, kernel-3 transposed conv has one)."""
    torch.manual_seed(0)
    model = VAE(tiny_temporal()).eval()
    with torch.no_grad():
        out = model.decode(torch.full((1, 4, 40), 0.7))[0, 0]  # (F, 160)
    interior = out[:, 40:120]
    assert float((interior - interior[:, :1]).abs().max()) < 1e-5
    transposed = torch.nn.ConvTranspose1d(4, 4, 3, 2, 1, output_padding=1)  # what it would look like
    t = transposed(torch.full((1, 4, 40), 0.7))[0, :, 20:60].detach()
    assert float((t[:, 0::2] - t[:, 1::2]).abs().max()) > 1e-3


def test_kl_is_summed_over_every_element_of_a_sequence():
    mu, logvar = torch.ones(3, 4, 16), torch.zeros(3, 4, 16)
    x = torch.rand(3, 1, 8, 8)
    _, _, kl = vae_loss(x, x, mu, logvar, 1.0, 1.0)
    assert float(kl) == pytest.approx(0.5 * 4 * 16)  # 0.5 * mu^2 per element


def test_spectral_loss():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 64, requires_grad=False)
    assert float(spectral_loss(x, x, 80.0)) == pytest.approx(0.0, abs=1e-6)
    x_hat = x.clone().requires_grad_(True)
    loss = spectral_loss(x_hat * 0.9, x, 80.0)
    loss.backward()
    assert float(loss.detach()) > 0 and x_hat.grad is not None and torch.isfinite(x_hat.grad).all()
    # a peak smeared over its neighbours costs more than the same per-pixel MSE spread evenly:
    # spectral convergence weighs the loud partials that a per-pixel dB loss lets blur
    peak = torch.zeros(1, 1, 32, 64)
    peak[..., 10, :] = 1.0
    smeared = peak.clone()
    smeared[..., 10, :], smeared[..., 9, :], smeared[..., 11, :] = 0.8, 0.1, 0.1
    offset = (peak + ((smeared - peak) ** 2).mean().sqrt()).clamp(0, 1)
    assert torch.nn.functional.mse_loss(offset, peak) >= torch.nn.functional.mse_loss(smeared, peak) * 0.5
    assert float(spectral_loss(smeared, peak, 80.0)) > float(spectral_loss(offset, peak, 80.0))


def test_training_step_adds_the_spectral_term():
    from vae.train import batch_loss

    torch.manual_seed(0)
    x, x_hat = torch.rand(2, 1, 32, 64), torch.rand(2, 1, 32, 64)
    mu = logvar = torch.zeros(2, 4, 16)
    base = batch_loss(x_hat, x, mu, logvar, TrainConfig(recon_weight=1.0))[0]
    with_spec = batch_loss(x_hat, x, mu, logvar, TrainConfig(recon_weight=1.0, spectral_weight=3.0), top_db=60.0)[0]
    assert float(with_spec - base) == pytest.approx(3.0 * float(spectral_loss(x_hat, x, 60.0)), rel=1e-5)


# ---- generation -----------------------------------------------------------------------------------


def test_reconstruct_joins_windows_without_seams(temporal_ckpt):
    """Consecutive windows go through the model as one spectrogram, so window k's reconstruction
    depends on its neighbours (no seam), and equals the model applied to the joined spectrogram."""
    torch.manual_seed(1)
    x = torch.rand(3, 32, 64)
    out = generate.reconstruct(temporal_ckpt, x)
    joined = x.permute(1, 0, 2).reshape(1, 1, 32, 192)
    with torch.no_grad():
        whole = temporal_ckpt.model.decode(temporal_ckpt.model.encode(joined)[0])[0, 0]
    torch.testing.assert_close(torch.cat(list(out), dim=1), whole)
    apart = generate.reconstruct(temporal_ckpt, x, joined=False)
    assert not torch.allclose(out[1], apart[1])


@pytest.mark.parametrize("windows", [4, 5, 7])
def test_long_inputs_go_in_cross_faded_chunks(temporal_ckpt, monkeypatch, windows):
    """With a model that passes its input through, the chunked overlap-add gives the input back
    exactly: the fades over each overlap sum to one, and every frame is covered."""
    monkeypatch.setattr(generate, "CHUNK_WINDOWS", 3)

    class PassThrough(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # gives the checkpoint its device

        def encode(self, x):
            return x, x

        def decode(self, z):
            return z

    monkeypatch.setattr(temporal_ckpt, "model", PassThrough())
    x = torch.rand(windows, 32, 64)
    torch.testing.assert_close(generate.reconstruct(temporal_ckpt, x), x)


def test_codes_are_sequences(temporal_ckpt):
    z = generate.sample(temporal_ckpt, 3, seed=0)
    assert z.shape == (3, 4, 16)
    assert generate.decode(temporal_ckpt, z).shape == (3, 32, 64)
    assert generate.decode(temporal_ckpt, z[0]).shape == (1, 32, 64)
    assert generate.start_code(temporal_ckpt, "origin").shape == (4, 16)
    line = generate.interpolate(z[0], z[1], 5)
    assert line.shape == (5, 4, 16)
    torch.testing.assert_close(line[2], (z[0] + z[1]) / 2)  # frame by frame
    with pytest.raises(Exception, match="cannot interpolate"):
        generate.interpolate(z[0], torch.zeros(4), 3)


# ---- latent statistics for sequences ----------------------------------------------------------------


def _sequences() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20, 4, 1, generator=g) * torch.tensor([3.0, 1.0, 0.5, 0.1])[:, None]
    return base + 0.2 * torch.randn(20, 4, 16, generator=g)  # (N, D, T')


def test_stats_of_sequences_are_those_of_their_frames():
    codes = _sequences()
    stats = stats_from_codes(codes, ["a"] * 10 + ["b"] * 10, [f"c{i}" for i in range(20)])
    frames = codes.transpose(1, 2).reshape(-1, 4)
    torch.testing.assert_close(stats.mean, frames.mean(0))
    assert stats.latent_shape == (4, 16) and stats.label_means.shape == (2, 4, 16)
    assert abs(float(stats.components[0, 0])) > 0.99  # the widest axis of the frames
    assert stats.project(codes).shape == (20, 2)
    torch.testing.assert_close(stats.project(codes), stats.project(codes.mean(-1)))  # a clip is its mean frame
    assert stats.trajectory(codes[0]).shape == (16, 2)


def test_sliders_move_every_frame_by_one_offset():
    codes = _sequences()
    stats = stats_from_codes(codes, [None] * 20, [""] * 20)
    z = codes[3]
    values, residual = to_sliders(stats, z, 2, step=0.05)  # on the grid: the residual keeps the rest
    assert residual.shape == (4, 16)
    torch.testing.assert_close(from_sliders(stats, values, residual), z, rtol=0, atol=1e-5)
    moved = from_sliders(stats, [values[0] + 1.0, values[1]], residual)
    offset = moved - z  # (D, T'): the same column everywhere, one SD along direction 1
    torch.testing.assert_close(offset, offset[:, :1].expand_as(offset), rtol=0, atol=1e-5)
    torch.testing.assert_close(offset[:, 0], stats.components[0] * stats.component_sd[0], rtol=0, atol=1e-5)
    zeros, res0 = zero_sliders(stats, z, 2)
    torch.testing.assert_close(from_sliders(stats, zeros, res0), z, rtol=0, atol=1e-5)
    assert prior_stats((4, 16)).latent_shape == (4, 16)


# ---- training and checkpoints --------------------------------------------------------------------


def test_temporal_model_trains_saves_and_loads(tiny_store, tmp_path):
    from vae.latents import load_latent_stats
    from vae.train import train

    out = tmp_path / "run"
    events = list(train(tiny_store.path, out, model_cfg=tiny_temporal(),
                        train_cfg=TrainConfig(spectral_weight=float(32 * 64)), **{**TRAIN_KW, "epochs": 3}))
    first, last = events[0].losses["recon"], events[-1].val["recon"]
    assert events[-1].kind == "done" and last < first  # it learns
    ck = load_checkpoint(out)
    assert ck.model_cfg == tiny_temporal() and ck.train_cfg.spectral_weight == 32 * 64
    stats = load_latent_stats(out)
    assert stats.latent_shape == (4, 16) and stats.codes.shape[1:] == (4, 16)
    x = torch.from_numpy(tiny_store.specs[:2].copy())
    assert generate.reconstruct(ck, x).shape == (2, 32, 64)
    # the learned prior over sequences was fitted on the training codes, saved, and samples come from it
    assert (out / "prior.json").is_file() and ck.prior is not None and ck.prior.latent_dim == 4
    z = generate.sample(ck, 3, seed=5)
    assert z.shape == (3, 4, 16)
    torch.testing.assert_close(z, generate.sample(ck, 3, seed=5))
    many = generate.sample(ck, 70, seed=5)  # more than one prior call draws: in chunks, the first as one call
    assert many.shape == (70, 4, 16) and torch.equal(many[:64], generate.sample(ck, 64, seed=5))
    with pytest.raises(InputError, match="1 to 10,000"):
        generate.sample(ck, 10_001)
    ck.prior.std.mul_(0.0)  # a prior that always predicts its mean: samples show that they come from it
    flat = generate.sample(ck, 2, seed=1)
    torch.testing.assert_close(flat[0], flat[1])


def test_a_corrupt_prior_is_a_clear_checkpoint_error(tiny_store, tmp_path):
    from vae.checkpoint import CheckpointError
    from vae.train import train

    out = tmp_path / "run"
    list(train(tiny_store.path, out, model_cfg=tiny_temporal(), **{**TRAIN_KW, "epochs": 1}))
    (out / "prior.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"prior\.safetensors.*delete prior\.json"):
        load_checkpoint(out)


def test_each_preset_picks_its_measured_architecture(tmp_path):
    from preprocessing.config import preset
    from vae.config import arch_for

    assert [arch_for(preset(n)) for n in ("digits", "music", "study-digits", "study-music")] == \
        ["temporal", "temporal", "study", "study"]
    assert arch_for(preset("music").replace(normalisation="clip")) == "temporal"  # same analysis settings
    assert arch_for(preset("music").replace(duration=1.0)) == "default"  # another clip length: no preset's
    assert arch_for(TINY) == "default"


def test_training_without_arch_uses_the_presets_choice(tiny_store, monkeypatch):
    train_module = importlib.import_module("vae.train")  # the module (vae.train is also the function's name)
    monkeypatch.setattr(train_module, "arch_for", lambda spec: "temporal" if spec == tiny_store.config else "x")
    cfg = train_module.resolve_configs(tiny_store)
    assert cfg.arch == "temporal" and cfg.model.kind == "temporal" and cfg.train.spectral_weight > 0
    assert train_module.resolve_configs(tiny_store, "default").model.kind == "global"  # --arch still rules


def test_a_conditional_temporal_model_gets_a_conditional_prior(tiny_store, tmp_path):
    """Its codes still carry the label, so its prior is p(z | label): sampling for a label draws from it."""
    from vae.train import train

    out = tmp_path / "run"
    list(train(tiny_store.path, out, model_cfg=tiny_temporal(), condition="label", **{**TRAIN_KW, "epochs": 1}))
    ck = load_checkpoint(out)
    assert ck.prior is not None and ck.prior.cfg.n_labels == len(ck.model_cfg.labels) == 3
    with torch.no_grad():
        torch.nn.init.normal_(ck.prior.label.weight, std=1.0)  # one epoch: make sure the labels' vectors differ
        torch.nn.init.normal_(ck.prior.out.weight, std=0.3)
    a, b = generate.sample(ck, 2, seed=3, label="0"), generate.sample(ck, 2, seed=3, label="2")
    assert a.shape == (2, 4, 16) and not torch.allclose(a, b)
    torch.testing.assert_close(a, generate.sample(ck, 2, seed=3, label="0"))
    with pytest.raises(InputError, match="unknown label '7'"):
        generate.sample(ck, 1, label="7")
