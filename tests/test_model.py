"""Model configuration and the conv VAE (vae.config, vae.model)."""

import math
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model_cfg

from preprocessing.config import PRESETS, ConfigError
from vae.config import ModelConfig, TrainConfig, model_config, train_config
from vae.losses import vae_loss
from vae.model import VAE, _same_padding

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
    assert TrainConfig.from_dict(tc.to_dict()) == tc
    with pytest.raises(ConfigError, match=re.escape("unknown training parameters: ['obsolete']")):
        TrainConfig.from_dict({**tc.to_dict(), "obsolete": 1})  # named, not silently dropped


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_does_not_depend_on_the_stride(kernel, stride):
    """Padding k // 2 maps n -> ceil(n / s) for any odd kernel and stride; the transposed conv inverts it."""
    assert _same_padding(kernel) == kernel // 2
    conv = torch.nn.Conv2d(1, 1, kernel, stride, _same_padding(kernel))
    up = torch.nn.ConvTranspose2d(1, 1, kernel, stride, _same_padding(kernel), output_padding=stride - 1)
    for n in (12, 13, 24):
        h = conv(torch.zeros(1, 1, n, n))
        assert h.shape[-1] == math.ceil(n / stride)
        if n % stride == 0:
            assert up(h).shape[-1] == n


@pytest.mark.parametrize("kernel", [2, 4])
def test_even_kernels_are_rejected(kernel):
    with pytest.raises(ConfigError, match=f"kernel must be odd .*, got {kernel}"):
        ModelConfig(kernel=kernel).validate()
    with pytest.raises(ConfigError, match=r"^kernel must be at least 1, got 0$"):
        ModelConfig(kernel=0).validate()


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


def test_vae_loss_closed_form_with_non_unit_variance():
    """KL(N(mu, sigma^2) || N(0, 1)) = 0.5 (mu^2 + sigma^2 - 1 - log sigma^2) per dim, summed over dims,
    averaged over the batch; recon is the per-pixel MSE; the total weights both."""
    x = torch.rand(2, 1, 4, 6, generator=torch.Generator().manual_seed(0))
    err = torch.full_like(x, 0.1)
    err[..., 3:] = 0.3  # half the pixels off by 0.1, half by 0.3: MSE = (0.01 + 0.09) / 2
    mu = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    logvar = torch.tensor([[math.log(4.0)] * 3, [0.0] * 3])  # sigma^2 = 4 for the first clip, 1 for the second
    total, recon, kl = vae_loss(x + err, x, mu, logvar, 7.0, 0.25)
    per_dim = 0.5 * (0.5**2 + 4.0 - 1.0 - math.log(4.0))  # 0.9319 nats
    assert float(recon) == pytest.approx(0.05, rel=1e-5)
    assert float(kl) == pytest.approx((3 * per_dim + 0.0) / 2, rel=1e-6)  # mean over the batch of 2
    assert float(total) == pytest.approx(7.0 * 0.05 + 0.25 * 3 * per_dim / 2, rel=1e-5)
    # logvar = 1 alone (mu = 0): 0.5 (e - 1 - 1) per dim
    _, _, kl1 = vae_loss(x, x, torch.zeros(1, 2), torch.ones(1, 2), 1.0, 1.0)
    assert float(kl1) == pytest.approx(2 * 0.5 * (math.e - 2.0), rel=1e-6)


def test_vae_loss_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(5, 4, generator=g), 2 * torch.randn(5, 4, generator=g)
    x, x_hat = torch.rand(5, 1, 3, 3, generator=g), torch.rand(5, 1, 3, 3, generator=g)
    total, recon, kl = vae_loss(x_hat, x, mu, logvar, 3.0, 0.5)
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    expected_kl = float(torch.distributions.kl_divergence(posterior, prior).sum(1).mean())
    expected_recon = float(((x_hat - x) ** 2).sum() / x.numel())
    assert float(kl) == pytest.approx(expected_kl, rel=1e-5)
    assert float(recon) == pytest.approx(expected_recon, rel=1e-6)
    assert float(total) == pytest.approx(3.0 * expected_recon + 0.5 * expected_kl, rel=1e-5)


def test_reparameterise_uses_the_variance():
    torch.manual_seed(0)
    mu, logvar = torch.full((20000, 1), 2.0), torch.full((20000, 1), math.log(9.0))
    z = VAE.reparameterise(mu, logvar)
    assert float(z.mean()) == pytest.approx(2.0, abs=0.1)
    assert float(z.std()) == pytest.approx(3.0, abs=0.1)


def _randomise_norms(model):
    """Non-trivial batch-norm statistics and affine parameters, so that where the norm sits matters."""
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


def _reference(sd, cfg, x):
    """The documented architecture written out with torch.nn.functional on the model's weights (eval mode):
    blocks of conv (stride s, 'same' padding k // 2) -> batch norm -> LeakyReLU(0.2) (or the study's
    conv -> ReLU -> batch norm), dense layers to (mu, logvar); the decoder mirrors it with transposed
    convolutions (output_padding s - 1) and a sigmoid on a last 1-channel layer. Decodes mu."""
    k, pad = cfg.kernel, cfg.kernel // 2
    act = F.relu if cfg.activation == "relu" else (lambda h: F.leaky_relu(h, 0.2))
    norm_at = 1 if cfg.norm_first else 2

    def block(h, p):
        def bn(h):
            q = f"{p}{norm_at}."
            return F.batch_norm(h, sd[q + "running_mean"], sd[q + "running_var"], sd[q + "weight"], sd[q + "bias"],
                                training=False, eps=1e-5)
        return act(bn(h)) if cfg.norm_first else bn(act(h))

    h = x
    for i, s in enumerate(cfg.strides):
        h = block(F.conv2d(h, sd[f"encoder.convs.{i}.0.weight"], sd[f"encoder.convs.{i}.0.bias"], s, pad),
                  f"encoder.convs.{i}.")
    h = h.flatten(1)
    mu = F.linear(h, sd["encoder.mu.weight"], sd["encoder.mu.bias"])
    logvar = F.linear(h, sd["encoder.logvar.weight"], sd["encoder.logvar.bias"])
    h = F.linear(mu, sd["decoder.dense.weight"], sd["decoder.dense.bias"]).reshape(len(x), *cfg.bottleneck)
    strides = cfg.strides[::-1]
    for i, s in enumerate(strides):
        p = f"decoder.convs.{i}."
        last = i == len(strides) - 1
        w, b = (sd[p + "weight"], sd[p + "bias"]) if last else (sd[p + "0.weight"], sd[p + "0.bias"])
        h = F.conv_transpose2d(h, w, b, s, pad, output_padding=(s[0] - 1, s[1] - 1))
        h = h if last else block(h, p)
    assert w.shape[1] == 1 and k == w.shape[-1]  # one output channel, the configured kernel
    return torch.sigmoid(h), mu, logvar


@pytest.mark.parametrize("cfg", [
    ModelConfig(n_freq=16, n_frames=24, channels=(4, 6), strides=((2, 1), (2, 3)), decoder_channels=(5,),
                kernel=5, latent_dim=3),
    ModelConfig(n_freq=16, n_frames=24, channels=(4, 6, 3), strides=((2, 2), (1, 2), (2, 1)),
                decoder_channels=(5, 4), latent_dim=2, activation="relu", norm_first=False),
], ids=["leaky-norm-first-kernel5", "study-order-relu"])
def test_forward_matches_the_architecture_written_out(cfg):
    torch.manual_seed(0)
    model = VAE(cfg)
    _randomise_norms(model)
    model.eval()
    x = torch.rand(3, 1, cfg.n_freq, cfg.n_frames, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want_hat, want_mu, want_logvar = _reference(model.state_dict(), cfg, x)
        mu, logvar = model.encode(x)
        x_hat = model.decode(mu)
    torch.testing.assert_close(mu, want_mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logvar, want_logvar, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_hat, want_hat, rtol=1e-5, atol=1e-6)
    assert x_hat.shape == x.shape
    # the layer types, in order, as documented
    nn = torch.nn
    act = nn.ReLU if cfg.activation == "relu" else nn.LeakyReLU
    order = [nn.Conv2d, nn.BatchNorm2d, act] if cfg.norm_first else [nn.Conv2d, act, nn.BatchNorm2d]
    for blk in model.encoder.convs:
        assert [type(m) for m in blk] == order
    for blk in list(model.decoder.convs)[:-1]:
        assert [type(m) for m in blk] == [torch.nn.ConvTranspose2d, *order[1:]]
    assert isinstance(model.decoder.convs[-1], torch.nn.ConvTranspose2d)


def test_reparameterise_draws_from_the_global_generator():
    """z = mu + eps * sigma with eps ~ N(0, I) from torch's global RNG (so seeded runs repeat)."""
    mu = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)], [1.0, -1.0, 2.0]])
    torch.manual_seed(11)
    eps = torch.randn(2, 3)
    torch.manual_seed(11)
    z = VAE.reparameterise(mu, logvar)
    torch.testing.assert_close(z, mu + eps * torch.exp(0.5 * logvar), rtol=0, atol=0)
