"""The learned prior over latent sequences (vae.prior), on synthetic sequences with known structure.

AR(1) processes with correlation 0.9 per channel, each channel offset and scaled: an i.i.d. model
cannot do better than the marginal entropy, an autoregressive one should gain 0.5 * log(1 - 0.81) =
-0.83 nats per element and its samples should keep the lag-1 correlation. Sized for a 2-core CPU.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from vae.prior import (
    MAX_LENGTH,
    MAX_SAMPLES,
    Prior,
    PriorConfig,
    PriorError,
    fit_prior,
    load_prior,
    nll,
    sample_prior,
    save_prior,
    standard_normal_nll,
)

D, T, RHO = 6, 24, 0.9
OFFSET = torch.linspace(-1.0, 1.0, D)  # per channel: the prior must return latents in this scale
SCALE = torch.linspace(0.5, 2.0, D)


def ar1(n: int, seed: int, length: int = T) -> torch.Tensor:
    """n stationary AR(1) sequences (n, D, length): unit marginal variance, then offset and scaled per channel."""
    e = torch.randn(n, D, length, generator=torch.Generator().manual_seed(seed))
    x = torch.empty(n, D, length)
    x[:, :, 0] = e[:, :, 0]
    for t in range(1, length):
        x[:, :, t] = RHO * x[:, :, t - 1] + math.sqrt(1 - RHO**2) * e[:, :, t]
    return OFFSET[:, None] + SCALE[:, None] * x


def lag1(z: torch.Tensor) -> torch.Tensor:
    """Lag-1 autocorrelation per channel (D,) of sequences (N, D, T)."""
    u = z - z.mean(dim=(0, 2), keepdim=True)
    return (u[:, :, 1:] * u[:, :, :-1]).mean(dim=(0, 2)) / (u * u).mean(dim=(0, 2))


def small(kind: str = "gru") -> PriorConfig:
    return PriorConfig(latent_dim=D, hidden=32, kind=kind)


@pytest.fixture(scope="module")
def fitted() -> tuple[Prior, dict]:
    return fit_prior(ar1(400, seed=0), small(), steps=200, batch_size=32, seed=0)


def test_fitted_prior_beats_iid_and_its_samples_keep_the_structure(fitted):
    prior, hist = fitted
    held_out = ar1(200, seed=1)
    with torch.no_grad():
        got = float(nll(prior, held_out))
    # the best any i.i.d. Gaussian can do (the true marginals), and the true conditional entropy
    iid_best = float((0.5 * torch.log(2 * math.pi * math.e * SCALE**2)).mean())
    ideal = iid_best + 0.5 * math.log(1 - RHO**2) * (T - 1) / T  # the first frame has no past
    assert got < float(standard_normal_nll(held_out)) - 0.5
    assert got < iid_best - 0.6
    assert ideal - 0.03 < got < ideal + 0.12  # no model beats the truth (held-out noise is ~0.005 nats)
    assert hist["best_val_nll"] < hist["baseline_val_nll"] - 0.5
    assert hist["best_val_nll"] < hist["initial_val_nll"]
    assert hist["steps_done"] == 200 and hist["stopped"] == "steps" and hist["n_val"] == 40

    s = sample_prior(prior, 64, T, seed=0)
    assert s.shape == (64, D, T) and torch.isfinite(s).all()
    assert torch.allclose(lag1(s), torch.full((D,), RHO), atol=0.1)  # 0.86..0.90 measured; i.i.d. gives 0
    assert ((s.mean(dim=(0, 2)) - OFFSET).abs() < 0.35 * SCALE).all()  # the VAE's scale, not N(0, 1)
    assert torch.allclose(s.std(dim=(0, 2)) / SCALE, torch.ones(D), atol=0.3)


def test_conv_kind_learns_the_structure_too():
    prior, hist = fit_prior(ar1(400, seed=0), small("conv"), steps=100, batch_size=32, seed=0)
    assert hist["best_val_nll"] < hist["baseline_val_nll"] - 0.5
    assert torch.allclose(lag1(sample_prior(prior, 64, T, seed=0)), torch.full((D,), RHO), atol=0.1)


def test_sample_length_differs_from_training_length(fitted):
    prior, _ = fitted
    assert sample_prior(prior, 1, 1, seed=0).shape == (1, D, 1)
    long = sample_prior(prior, 16, 5 * T, seed=0)
    assert long.shape == (16, D, 5 * T) and torch.isfinite(long).all()
    assert torch.allclose(lag1(long), torch.full((D,), RHO), atol=0.1)
    with torch.no_grad():
        assert float(nll(prior, ar1(50, seed=2, length=5 * T))) < float(standard_normal_nll(long)) - 0.5


@pytest.mark.parametrize("kind", ["gru", "conv"])
def test_prediction_is_causal_and_stepping_matches_the_whole_sequence(kind):
    """Frame t's prediction depends on frames < t only, and sampling's step() computes the same as forward()."""
    torch.manual_seed(0)
    prior = Prior(PriorConfig(latent_dim=D, hidden=16, n_layers=3, kind=kind)).eval()
    torch.nn.init.normal_(prior.out.weight, std=0.3)  # the head starts at zero: give it something to show
    u = torch.randn(2, D, 20)
    with torch.no_grad():
        mu, logvar = prior(u)  # (2, D, 20)
        v = u.clone()
        v[:, :, 9] += 1.0
        mu2, _ = prior(v)
        assert torch.equal(mu[:, :, :10], mu2[:, :, :10])  # frames 0..9 do not see frame 9
        assert not torch.allclose(mu[:, :, 10], mu2[:, :, 10])  # frame 10 does
        prev, state = prior.start.expand(2, -1), None
        for t in range(20):
            m, lv, state = prior.step(prev, state)
            assert torch.allclose(m, mu[:, :, t], atol=1e-5) and torch.allclose(lv, logvar[:, :, t], atol=1e-5)
            prev = u[:, :, t]


def test_fit_is_deterministic_and_leaves_the_global_rng_alone():
    z = ar1(60, seed=3)
    rng = torch.get_rng_state()
    a, ha = fit_prior(z, small(), steps=20, batch_size=16, seed=5)
    b, hb = fit_prior(z, small(), steps=20, batch_size=16, seed=5)
    c, _ = fit_prior(z, small(), steps=20, batch_size=16, seed=6)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ha["val_nll"] == hb["val_nll"]
    assert not torch.equal(a.inp.weight, c.inp.weight)


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(fitted):
    prior, _ = fitted
    rng = torch.get_rng_state()
    a = sample_prior(prior, 4, T, seed=1)
    assert torch.equal(a, sample_prior(prior, 4, T, seed=1))
    assert not torch.equal(a, sample_prior(prior, 4, T, seed=2))
    assert not torch.equal(sample_prior(prior, 4, T), sample_prior(prior, 4, T))  # seed=None: fresh each time
    assert torch.equal(torch.get_rng_state(), rng)
    # temperature 0: every sample follows the most likely path
    flat = sample_prior(prior, 3, T, temperature=0.0, seed=1)
    assert torch.equal(flat, sample_prior(prior, 3, T, temperature=0.0, seed=2))
    assert torch.allclose(flat[0], flat[2])
    assert float(sample_prior(prior, 64, T, temperature=0.5, seed=1).std(dim=(0, 2)).mean()) < float(
        sample_prior(prior, 64, T, seed=1).std(dim=(0, 2)).mean())


def test_progress_and_time_limit():
    calls = []
    _, hist = fit_prior(ar1(30, seed=4), small(), steps=40, batch_size=8, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(s, 40) for s in range(4, 41, 4)] and "validation NLL" in calls[-1][2]
    assert hist["step"] == list(range(4, 41, 4)) and len(hist["val_nll"]) == len(hist["train_nll"]) == 10
    prior, hist = fit_prior(ar1(30, seed=4), small(), steps=10_000, batch_size=8, time_limit_s=0.3)
    assert hist["stopped"] == "time limit" and 0 < hist["steps_done"] < 10_000
    assert prior.info["stopped"] == "time limit" and not prior.training


def test_save_load_round_trip(fitted, tmp_path):
    prior, hist = fitted
    assert load_prior(tmp_path) is None  # no prior here
    save_prior(tmp_path / "p", prior)
    assert sorted(f.name for f in (tmp_path / "p").iterdir()) == ["prior.json", "prior.safetensors"]
    loaded = load_prior(tmp_path / "p")
    assert loaded is not None and loaded.cfg == prior.cfg and not loaded.training
    assert torch.equal(sample_prior(loaded, 5, 2 * T, seed=7), sample_prior(prior, 5, 2 * T, seed=7))
    assert loaded.info["best_val_nll"] == hist["best_val_nll"]
    doc = json.loads((tmp_path / "p" / "prior.json").read_text())
    assert doc["config"]["latent_dim"] == D and len(doc["normalisation"]["std"]) == D


@pytest.mark.parametrize(("damage", "match"), [
    (lambda d: (d / "prior.safetensors").write_bytes(b"not safetensors"), "prior.safetensors is not a readable"),
    (lambda d: (d / "prior.safetensors").unlink(), "no prior.safetensors"),
    (lambda d: (d / "prior.json").write_text("{oops"), "prior.json is not valid JSON"),
    (lambda d: (d / "prior.json").write_text('{"format": "other"}'), "prior.json is not a prior config"),
    (lambda d: _edit_json(d, lambda doc: doc["config"].update(hidden=64)), "does not match the prior in prior.json"),
    (lambda d: _edit_json(d, lambda doc: doc["config"].update(kind="lstm")), "prior.json has a bad .*kind"),
    (lambda d: _edit_json(d, lambda doc: doc["normalisation"]["std"].__setitem__(0, 9.0)), "normalisation does not"),
])
def test_damaged_files_give_a_clear_error(tmp_path, damage, match):
    prior = Prior(small())
    save_prior(tmp_path, prior)
    damage(tmp_path)
    with pytest.raises(PriorError, match=match) as e:
        load_prior(tmp_path)
    assert isinstance(e.value, ValueError)


def _edit_json(directory, edit) -> None:
    doc = json.loads((directory / "prior.json").read_text())
    edit(doc)
    (directory / "prior.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n": 0}, "n must be"), ({"n": MAX_SAMPLES + 1}, "n must be"), ({"n": 2.0}, "n must be"),
    ({"length": 0}, "length must be"), ({"length": MAX_LENGTH + 1}, "length must be"),
    ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
])
def test_sampling_bounds(kwargs, match):
    with pytest.raises(PriorError, match=match):
        sample_prior(Prior(small()), **{"n": 1, "length": 4, **kwargs})


def test_bad_inputs_rejected():
    z = ar1(10, seed=0)
    bad = z.clone()
    bad[3, 1, 5] = float("nan")
    for arg, match in [(z[0], r"\(N, D, T\)"), (z[:1], "at least 2"), (bad, "1 non-finite"),
                       (z[:, :4], "4 channels but the prior models 6")]:
        with pytest.raises(PriorError, match=match):
            fit_prior(arg, small(), steps=1)
    with pytest.raises(PriorError, match="non-finite"):
        nll(Prior(small()), z.clone().index_fill_(2, torch.tensor([0]), float("inf")))
    for kwargs in ({"steps": 0}, {"batch_size": 0}, {"lr": 0.0}, {"time_limit_s": 0}):
        with pytest.raises(PriorError):
            fit_prior(z, small(), **kwargs)
    with pytest.raises(ValueError, match="kind"):
        PriorConfig(latent_dim=4, kind="lstm").validate()
    with pytest.raises(ValueError, match="latent_dim"):
        Prior(PriorConfig(latent_dim=0))
    assert PriorConfig.from_dict(small("conv").to_dict()) == small("conv")


# ----- a conditional prior (a conditional VAE's codes still carry the label) ----------------------------


def labelled(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """AR(1) sequences whose offset depends on a label in {0, 1, 2}: -2, 0 or +2 on every channel."""
    y = torch.arange(n) % 3
    return ar1(n, seed) + 2.0 * (y.float() - 1.0)[:, None, None], y


@pytest.fixture(scope="module")
def fitted_conditional() -> tuple[Prior, dict]:
    z, y = labelled(300, seed=0)
    return fit_prior(z, PriorConfig(latent_dim=D, hidden=32, n_labels=3), labels=y, steps=200, batch_size=32, seed=0)


def test_a_conditional_prior_samples_each_labels_codes(fitted_conditional):
    """Sampling for a label draws sequences around that label's offset, and the label lowers the NLL."""
    prior, _ = fitted_conditional
    means = [float(sample_prior(prior, 40, T, seed=k, label=k).mean() - OFFSET.mean()) for k in range(3)]
    assert means[0] < -1.0 and abs(means[1]) < 1.0 and means[2] > 1.0, means
    z, y = labelled(60, seed=5)
    with torch.no_grad():  # the right label explains the codes better
        assert float(nll(prior, z, y)) < float(nll(prior, z, (y + 1) % 3)) - 0.3
    no_label = sample_prior(prior, 40, T, seed=0)  # the mean of the labels' vectors: between them
    assert abs(float(no_label.mean() - OFFSET.mean())) < 1.5


def test_a_conditional_prior_round_trips_and_checks_its_labels(fitted_conditional, tmp_path):
    prior, _ = fitted_conditional
    save_prior(tmp_path, prior)
    back = load_prior(tmp_path)
    assert back.cfg.n_labels == 3
    assert torch.equal(sample_prior(back, 3, T, seed=1, label=2), sample_prior(prior, 3, T, seed=1, label=2))
    z, y = labelled(10, seed=6)
    with pytest.raises(PriorError, match=r"labels must be in \[0, 3\)"):
        nll(prior, z, y + 3)
    with pytest.raises(PriorError, match=r"labels must be in \[0, 3\)"):
        sample_prior(prior, 2, T, label=3)
    with pytest.raises(PriorError, match="give labels"):
        fit_prior(z, prior.cfg, steps=1)
    with pytest.raises(PriorError, match="unconditional prior"):
        fit_prior(z, small(), labels=y, steps=1)
    with pytest.raises(PriorError, match="not conditional"):
        nll(fit_prior(z, small(), steps=1)[0], z, y)
    with pytest.raises(ValueError, match="n_labels"):
        PriorConfig(latent_dim=D, n_labels=-1).validate()
