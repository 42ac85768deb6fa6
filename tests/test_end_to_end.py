"""End to end on tiny synthetic audio: preprocess -> train -> reconstruct -> sample -> evaluate."""

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, TINY, write_fsdd_like

from preprocessing.audio import load_audio, save_wav
from preprocessing.store import build_store
from vae.checkpoint import find_checkpoints, load_checkpoint
from vae.evaluate import evaluate
from vae.generate import analyse, decode, reconstruct, reconstruct_audio, sample, to_wave
from vae.latents import load_latent_stats
from vae.train import train


def test_end_to_end(tmp_path):
    files = write_fsdd_like(tmp_path / "audio")
    summary = build_store(tmp_path / "audio", tmp_path / "store", TINY)
    assert summary.n_clips == 36 and not summary.skipped

    events = list(train(tmp_path / "store", tmp_path / "ck", arch="default", latent_dim=4, epochs=5, batch_size=8,
                        lr=2e-3, kl_warmup_epochs=2, device="cpu"))
    epochs = [e for e in events if e.kind == "epoch"]
    assert events[-1].kind == "done" and len(epochs) == 5
    assert epochs[-1].losses["recon"] < 0.8 * epochs[0].losses["recon"]
    assert min(e.val["recon"] for e in epochs[1:]) < epochs[0].val["recon"]
    assert find_checkpoints(tmp_path) == [tmp_path / "ck"]

    ck = load_checkpoint(tmp_path / "ck")
    assert load_latent_stats(tmp_path / "ck").codes.shape == (24, 4)
    wave = load_audio(files[0], SR)
    recon, _, _ = reconstruct_audio(ck, wave, n_iter=16)
    assert recon.shape == wave.shape and np.isfinite(recon).all() and np.abs(recon).max() > 0
    save_wav(tmp_path / "out" / "recon.wav", recon, SR)
    assert sf.info(str(tmp_path / "out" / "recon.wav")).frames == len(wave)

    specs = decode(ck, sample(ck, 3, temperature=0.8, seed=0))
    sounds = [to_wave(ck, s, n_iter=8) for s in specs]
    assert all(s.shape == (TINY.n_samples,) and np.isfinite(s).all() for s in sounds)
    assert not np.allclose(sounds[0], sounds[1])

    result = evaluate(ck, tmp_path / "store", n_iter=8, with_stoi=False)
    assert result["n_files"] == 12 and result["split"] == "test" and result["skipped"] == 0
    assert np.isfinite([result["spectrogram_mse"], result["lsd_db"], result["spectral_convergence"]]).all()
    # the figures are means over the 12 test files (takes 0-4), each cut into two padded windows
    test_files = [f for f in files if int(f.stem.split("_")[2]) < 5]
    assert len(test_files) == 12 and result["n_windows"] == 24
    mses = []
    for f in test_files:
        a = analyse(ck, load_audio(f, SR))
        mses.append(float(((reconstruct(ck, a.specs) - a.specs) ** 2).mean()))
    assert result["spectrogram_mse"] == pytest.approx(np.mean(mses), abs=1e-5)  # rounded to 5 places
