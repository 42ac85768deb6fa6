"""The shipped checkpoints: they load, reconstruct the examples, and their cards tell the truth."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from preprocessing.audio import load_audio
from vae import metrics
from vae.checkpoint import load_checkpoint
from vae.evaluate import evaluate
from vae.generate import reconstruct_audio, sample
from vae.latents import MAX_SLIDERS, load_latent_stats

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHIPPED = {"digits": SHARED / "fsdd" / "recordings", "music": SHARED / "music",
           "digits-conditioned": SHARED / "fsdd" / "recordings"}
EXAMPLES = sorted((ROOT / "examples" / "digits").glob("*.wav"))

_spec = importlib.util.spec_from_file_location("make_model_card", ROOT / "scripts" / "make_model_card.py")
card_tools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(card_tools)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_is_complete_and_small(name):
    d = ROOT / "checkpoints" / name
    for f in ("config.json", "model.safetensors", "latents.safetensors", "README.md"):
        assert (d / f).is_file(), f"checkpoints/{name} lacks {f}"
    assert not (d / "last").exists(), "training state must not be shipped"
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    assert size <= 25e6, f"checkpoints/{name} is {size / 1e6:.1f} MB (limit 25 MB)"
    stats = load_latent_stats(d)
    assert stats is not None and 1 <= stats.n_sliders() <= MAX_SLIDERS
    ck = load_checkpoint(d)
    assert len(stats.label_names) >= 2 and tuple(stats.codes.shape[1:]) == ck.model_cfg.latent_shape
    if ck.model_cfg.kind == "temporal":  # sampling needs its learned prior
        assert ck.prior is not None and ck.prior.latent_dim == ck.model_cfg.latent_dim


# Bounds on the examples (synthetic speech, see examples/README.md), with margin over what the models
# reach: spectrogram MSE as a share of the input spectrogram's variance (predicting its mean level
# scores 1, random weights 2.5 to 4; digits reaches 0.12 to 0.23, music, trained on music, 0.5 to 0.63)
# and the log-spectral distance with 16 seeded Griffin-Lim iterations (digits 7 to 8.5 dB, music 15 to 18).
BOUNDS = {"digits": {"mse_share": 0.4, "lsd_db": 10.0}, "music": {"mse_share": 0.8, "lsd_db": 20.0},
          "digits-conditioned": {"mse_share": 0.4, "lsd_db": 10.0}}  # without a label: the mean of its labels'


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_reconstructs_examples(name):
    ck = load_checkpoint(ROOT / "checkpoints" / name)
    sr = ck.spec.sample_rate
    assert len(EXAMPLES) >= 30
    specs, recons = [], []
    for path in EXAMPLES[:: 10 if name == "music" else 3]:
        wave = load_audio(path, sr)
        torch.manual_seed(0)  # Griffin-Lim starts from random phase
        out, analysis, spec = reconstruct_audio(ck, wave, n_iter=16)
        assert out.shape == wave.shape and np.isfinite(out).all()
        assert spec.shape == analysis.specs.shape
        share = float(((spec - analysis.specs) ** 2).mean() / analysis.specs.var())
        assert share < BOUNDS[name]["mse_share"], f"{path.name}: spectrogram MSE is {share:.2f} of its variance"
        lsd = metrics.log_spectral_distance(wave, out, sr)
        assert lsd < BOUNDS[name]["lsd_db"], f"{path.name}: log-spectral distance {lsd:.1f} dB"
        specs.append(analysis.specs[0])
        recons.append(spec[0])
    torch.manual_seed(0)
    np.testing.assert_array_equal(reconstruct_audio(ck, wave, n_iter=16)[0], out)  # seeded: repeatable
    if name.startswith("digits"):  # trained on speech: each reconstruction is nearer its own clip than the others
        n = len(specs)
        mse = torch.stack([((recons[i] - specs[j]) ** 2).mean() for i in range(n) for j in range(n)]).reshape(n, n)
        others = mse[~torch.eye(n, dtype=torch.bool)].reshape(n, n - 1)
        assert (mse.diagonal() < others.median(1).values).all(), mse


@pytest.mark.parametrize("name", SHIPPED)
def test_model_card_matches_evaluate(name):
    data = SHIPPED[name]
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}: the card's figures cannot be re-measured here")
    d = ROOT / "checkpoints" / name
    card = card_tools.card_evaluation((d / "README.md").read_text())
    result = evaluate(load_checkpoint(d), data, split=card["split"])
    assert result["n_files"] == card["n_files"] and result["n_windows"] == card["n_windows"]
    for key in ("spectrogram_mse", "lsd_db", "spectral_convergence", "stoi"):
        if key in card:
            assert math.isclose(result[key], card[key], rel_tol=2e-3, abs_tol=2e-4), (key, result[key], card[key])


def test_the_conditioned_digits_model_samples_each_digit_from_its_own_gaussian():
    """checkpoints/digits-conditioned: every digit has a Gaussian of its codes, and sampling for a digit draws
    from it (bench_conditional measures what the samples sound like: benchmarks/results/conditional.md)."""
    d = ROOT / "checkpoints" / "digits-conditioned"
    ck = load_checkpoint(d)
    stats = load_latent_stats(d, ck.model_cfg.latent_shape)
    digits = [str(i) for i in range(10)]
    assert list(ck.model_cfg.labels) == digits and stats.label_names == digits
    assert stats.label_chol is not None and stats.label_chol.shape == (10, 64, 64)
    means = torch.stack([sample(ck, 400, seed=0, label=k).mean(0) for k in digits])  # (10, 64)
    assert (torch.cdist(means, stats.label_means).argmin(1) == torch.arange(10)).all()
