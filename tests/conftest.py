"""Shared fixtures: tiny synthetic audio in FSDD naming, a store built from it, tiny models.

Everything here is sized for a 2-core CPU: 8 kHz clips of 0.3 s, 32x64 spectrograms, models
with a few thousand parameters. Session-scoped fixtures are built once and must not be mutated.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from preprocessing.config import SpectrogramConfig
from preprocessing.store import Store, build_store
from vae.checkpoint import Checkpoint
from vae.config import ModelConfig, TrainConfig
from vae.model import VAE

ROOT = Path(__file__).resolve().parents[1]  # the repository (pyproject's `pythonpath` puts it on sys.path)

# One thread on small machines: with other jobs on the same 2 cores, OpenMP threads oversubscribe
# and training runs several times slower than with one.
torch.set_num_threads(1 if (os.cpu_count() or 1) <= 2 else 2)

SR = 8000
# n_samples 2032 -> 1 + 2032 // 32 = 64 frames, 64 // 2 = 32 bins: a 32x64 spectrogram.
TINY = SpectrogramConfig(sample_rate=SR, duration=0.254, n_fft=64, hop_length=32)
CLIP_S = 0.3  # one window per clip (2400 samples round to one 2032-sample window)
DIGITS, SPEAKERS, TAKES = (0, 1, 2), ("alice", "bob"), (0, 1, 5, 6, 7, 8)  # takes 0-4: test split


SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # Debian's fluid-soundfont-gm


def music_tools_missing() -> str:
    """Why music can't be rendered here (FluidSynth, its soundfont, music21), or "" when it can."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        return "fluidsynth or the FluidR3 soundfont is not installed (apt-get install fluidsynth fluid-soundfont-gm)"
    if importlib.util.find_spec("music21") is None:
        return "music21 is not installed (it is in requirements-dev.txt)"
    return ""


def tiny_model_cfg(latent_dim: int = 4) -> ModelConfig:
    """A very small VAE for 32x64 spectrograms (bottleneck 32x4x8)."""
    return ModelConfig(n_freq=32, n_frames=64, channels=(8, 16, 32), strides=((2, 2),) * 3,
                       decoder_channels=(16, 8), latent_dim=latent_dim)


def tone(freq: float, dur: float = CLIP_S, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(f0: float, f1: float, dur: float = CLIP_S, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    """Linear sweep from f0 to f1 Hz."""
    t = np.arange(int(dur * sr)) / sr
    return (amp * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / dur * t**2))).astype(np.float32)


def noise(dur: float = CLIP_S, sr: int = SR, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).uniform(-1, 1, int(dur * sr))).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr, subtype=subtype)
    return path


def digit_sound(digit: int, speaker: int, take: int) -> np.ndarray:
    """A distinct sound per 'digit' (tone, chirp, noise burst), varied by speaker and take."""
    shift = 1.0 + 0.15 * speaker + 0.02 * take
    env = np.hanning(int(CLIP_S * SR)).astype(np.float32) ** 0.5
    if digit == 0:
        wave = tone(400 * shift) + tone(1200 * shift, amp=0.2)
    elif digit == 1:
        wave = chirp(300 * shift, 2500 * shift)
    else:
        wave = noise(seed=100 * speaker + take) * (tone(3 * shift, amp=1.0) > 0)
    return wave * env + noise(amp=0.005, seed=take)


def write_fsdd_like(folder: Path) -> list[Path]:
    """36 clips named {digit}_{speaker}_{take}.wav: 24 train, 12 test."""
    return [write_wav(folder / f"{d}_{s}_{t}.wav", digit_sound(d, k, t))
            for d in DIGITS for k, s in enumerate(SPEAKERS) for t in TAKES]


@pytest.fixture(scope="session")
def fsdd_dir(tmp_path_factory) -> Path:
    """A read-only folder of synthetic FSDD-named clips."""
    folder = tmp_path_factory.mktemp("fsdd")
    write_fsdd_like(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_store(fsdd_dir, tmp_path_factory) -> Store:
    """A store built from ``fsdd_dir`` with the TINY config (do not modify)."""
    out = tmp_path_factory.mktemp("stores") / "tiny"
    build_store(fsdd_dir, out, TINY)
    return Store(out)


@pytest.fixture
def tiny_ckpt() -> Checkpoint:
    """An untrained tiny model with a global dB range, in memory."""
    torch.manual_seed(0)
    cfg = tiny_model_cfg()
    return Checkpoint(VAE(cfg).eval(), TINY.replace(ref_db=30.0), cfg, TrainConfig())


TRAIN_KW = dict(epochs=4, batch_size=8, lr=3e-3, kl_warmup_epochs=0, kl_weight=0.1, device="cpu", seed=0)


@pytest.fixture(scope="session")
def trained(tiny_store, tmp_path_factory) -> tuple[Path, list]:
    """(output directory, events) of one short training run on ``tiny_store`` (do not modify)."""
    from vae.train import train

    out = tmp_path_factory.mktemp("runs") / "trained"
    events = list(train(tiny_store.path, out, model_cfg=tiny_model_cfg(), **TRAIN_KW))
    return out, events
