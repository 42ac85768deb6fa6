"""Model configuration and the conv VAE (vae.config, vae.model)."""

import math

import pytest
import torch
from conftest import tiny_model_cfg

from preprocessing.config import PRESETS, ConfigError
from vae.config import ModelConfig, TrainConfig, model_config, train_config
from vae.model import VAE, vae_loss

SHAPES = [PRESETS[n].shape for n in ("digits", "music", "study-digits", "study-music")]


@pytest.mark.parametrize("arch", ["default", "study"])
@pytest.mark.parametrize("shape", SHAPES, ids=["digits", "music", "study-digits", "study-music"])
def test_architectures_mirror_every_preset_shape(arch, shape):
    """Shape check on the meta device (no compute): the decoder gives the input shape back."""
    cfg = model_config(arch, shape)
    assert (cfg.n_freq, cfg.n_frames) == shape
    with torch.device("meta"):
        model = VAE(cfg).eval()
        x_hat, mu, logvar = model(torch.zeros(2, 1, *shape))
    assert x_hat.shape == (2, 1, *shape)
    assert mu.shape == logvar.shape == (2, cfg.latent_dim)


def test_preset_details():
    study = model_config("study", (256, 64))
    assert study.channels == (512, 256, 128, 64, 32) and study.latent_dim == 128
    assert study.activation == "relu" and not study.norm_first
    default = model_config("default", (128, 96))
    assert default.bottleneck == (256, 8, 6) and default.channels == (32, 64, 128, 256)
    assert model_config("default", (128, 96), latent_dim=7).latent_dim == 7
    assert train_config("study", (256, 64)).recon_weight == 1e6
    # the default reconstruction weight scales with the number of pixels
    big, small = train_config("default", (128, 96)).recon_weight, train_config("default", (32, 64)).recon_weight
    assert big / small == pytest.approx(128 * 96 / (32 * 64))


@pytest.mark.parametrize("arch", ["default", "study"])
def test_forward_digits_shape_in_unit_range(arch):
    torch.manual_seed(0)
    model = VAE(model_config(arch, (128, 96))).eval()
    x = torch.rand(2, 1, 128, 96)
    with torch.no_grad():
        x_hat, mu, logvar = model(x)
    assert x_hat.shape == x.shape
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()


def test_train_mode_forward_and_backward():
    model = VAE(tiny_model_cfg())
    x = torch.rand(3, 1, 32, 64)
    x_hat, mu, logvar = model(x)
    loss, _, _ = vae_loss(x_hat, x, mu, logvar, 2048.0, 1.0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"latent_dim": 0}, "latent_dim"),
    ({"n_freq": 100}, "cannot be mirrored"),
    ({"n_frames": 90}, "cannot be mirrored"),
    ({"activation": "gelu"}, "activation"),
    ({"decoder_channels": (1,)}, "decoder_channels"),
    ({"channels": (8, 16), "decoder_channels": (8,)}, "equal length"),
])
def test_bad_model_config_rejected(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs).validate()
    with pytest.raises(ConfigError):
        VAE(ModelConfig(**kwargs))


@pytest.mark.parametrize(("arch", "shape", "latent", "match"), [
    ("default", (128, 96), 0, "latent_dim"),
    ("study", (128, 90), None, "cannot be mirrored"),  # 90 frames do not divide by 16
    ("study", (100, 96), None, "cannot be mirrored"),
    ("default", (33, 65), None, "too small or odd"),
    ("transformer", (128, 96), None, "unknown architecture"),
])
def test_model_config_rejects(arch, shape, latent, match):
    with pytest.raises(ConfigError, match=match):
        model_config(arch, shape, latent)


def test_config_dict_round_trip():
    cfg = model_config("study", (256, 64))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    tc = TrainConfig(epochs=3, lr=1e-4)
    assert TrainConfig.from_dict({**tc.to_dict(), "obsolete": 1}) == tc


@pytest.mark.parametrize(("changes", "match"), [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"),
    ({"kl_weight": -1.0}, "kl_weight"),
])
def test_bad_train_config(changes, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig().replace(**changes)


def test_vae_loss():
    x = torch.rand(4, 1, 8, 8)
    zeros = torch.zeros(4, 3)
    total, recon, kl = vae_loss(x, x, zeros, zeros, 10.0, 1.0)
    assert float(total) == float(recon) == float(kl) == 0.0  # perfect recon, posterior = prior
    mu = torch.ones(4, 3)
    total, recon, kl = vae_loss(x * 0, x, mu, zeros, 10.0, 0.5)
    assert float(kl) == pytest.approx(1.5)  # 0.5 * mu^2 summed over 3 dims
    assert float(recon) == pytest.approx(float((x**2).mean()))
    assert float(total) == pytest.approx(10 * float(recon) + 0.5 * 1.5)


def test_reparameterise_uses_the_variance():
    torch.manual_seed(0)
    mu, logvar = torch.full((20000, 1), 2.0), torch.full((20000, 1), math.log(9.0))
    z = VAE.reparameterise(mu, logvar)
    assert float(z.mean()) == pytest.approx(2.0, abs=0.1)
    assert float(z.std()) == pytest.approx(3.0, abs=0.1)
