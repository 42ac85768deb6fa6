"""The shipped checkpoints: they load, reconstruct the examples, and their cards tell the truth."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from preprocessing.audio import load_audio
from vae.checkpoint import load_checkpoint
from vae.evaluate import evaluate
from vae.generate import reconstruct_audio
from vae.latents import MAX_SLIDERS, load_latent_stats

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHIPPED = {"digits": SHARED / "fsdd" / "recordings", "music": SHARED / "music"}
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
    assert len(stats.label_names) >= 2 and stats.codes.shape[1] == load_checkpoint(d).model_cfg.latent_dim


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_reconstructs_examples(name):
    ck = load_checkpoint(ROOT / "checkpoints" / name)
    assert len(EXAMPLES) >= 30
    for path in EXAMPLES[:: 10 if name == "music" else 3]:
        wave = load_audio(path, ck.spec.sample_rate)
        out, analysis, spec = reconstruct_audio(ck, wave, n_iter=16)
        assert out.shape == wave.shape and np.isfinite(out).all()
        assert np.abs(out).max() > 1e-3, f"{path.name}: reconstruction is silent"
        assert spec.shape == analysis.specs.shape


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
