"""ONNX export (vae.onnx_export, `export --format onnx`): onnxruntime gives PyTorch's outputs to within
TOLERANCE for both shipped models and two untrained tiny ones, the batch and time axes are dynamic, and
sound_vae.json alone, with numpy, turns the decoder's output into the dB and the sound vae.generate makes
(and sound into the encoder's input)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, tone

from preprocessing.config import SpectrogramConfig
from vae.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from vae.cli import main
from vae.config import ModelConfig, TrainConfig
from vae.generate import analyse, decode, display_range, encode, render
from vae.latents import from_sliders, load_latent_stats
from vae.model import VAE
from vae.onnx_export import CONFIG, DECODER, ENCODER, TOLERANCE, compare_onnx, export_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

GLOBAL_CFG = ModelConfig(n_freq=32, n_frames=64, channels=(8, 16, 32), strides=((2, 2),) * 3,
                         decoder_channels=(16, 8), latent_dim=4)
# time ratio 4 and weight norm: what the shipped models (ratio 2, group norm) do not exercise
TEMPORAL_CFG = ModelConfig(n_freq=32, n_frames=64, channels=(8, 16), strides=((1, 2), (1, 2)), decoder_channels=(8,),
                           latent_dim=4, kind="temporal", res_blocks=1, norm="weight")
MODELS = ["digits", "music", "tiny-global", "tiny-temporal"]


def _tiny(directory, cfg: ModelConfig, spec: SpectrogramConfig):
    torch.manual_seed(0)
    return save_checkpoint(directory, VAE(cfg).eval(), spec, TrainConfig(), {"arch": "tiny"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Checkpoint, object]]:
    """name -> (checkpoint, folder of its ONNX export): the shipped models and two untrained tiny ones (one with
    per-clip normalisation), each exported once."""
    tmp = tmp_path_factory.mktemp("onnx")
    sources = {"digits": ROOT / "checkpoints" / "digits", "music": ROOT / "checkpoints" / "music",
               "tiny-global": _tiny(tmp / "tiny-global", GLOBAL_CFG, TINY.replace(ref_db=30.0)),
               "tiny-temporal": _tiny(tmp / "tiny-temporal", TEMPORAL_CFG, TINY.replace(normalisation="clip"))}
    return {name: (load_checkpoint(src), export_onnx(src, tmp / f"{name}-onnx")) for name, src in sources.items()}


def _sessions(folder):
    return [ort.InferenceSession(str(folder / n), providers=["CPUExecutionProvider"]) for n in (ENCODER, DECODER)]


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_matches_pytorch(exported, name):
    """Max abs difference <= TOLERANCE (1e-4) on the decoder's 0..1 output and on mu and logvar, at batch 1 and
    3 and (temporal) two lengths; measured under 1e-6 for the decoder, up to 1.4e-5 for mu (music; README)."""
    ck, folder = exported[name]
    err = compare_onnx(ck, folder)
    assert max(err.values()) <= TOLERANCE, err


@pytest.mark.parametrize("name", MODELS)
def test_axes_are_dynamic(exported, name):
    ck, folder = exported[name]
    cfg = ck.model_cfg
    enc, dec = _sessions(folder)
    d, f = cfg.latent_dim, cfg.n_freq
    shapes = json.loads((folder / CONFIG).read_text())
    lengths = [cfg.latent_shape[1], 5] if cfg.kind == "temporal" else [None]
    for b in (1, 3):
        for frames in lengths:
            z = np.random.default_rng(b).standard_normal((b, d) if frames is None else (b, d, frames)).astype("f4")
            x = dec.run(None, {"z": z})[0]
            t = cfg.n_frames if frames is None else cfg.time_ratio * frames
            assert x.shape == (b, f, t) and 0 <= x.min() and x.max() <= 1
            mu, logvar = enc.run(None, {"spectrogram": x})
            assert mu.shape == logvar.shape == z.shape
    if cfg.kind == "temporal":
        time = f"{cfg.time_ratio}*frames"
        assert shapes["decoder"]["shapes"] == {"z": ["batch", d, "frames"], "spectrogram": ["batch", f, time]}
        assert shapes["encoder"]["shapes"] == {"spectrogram": ["batch", f, time], "mu": ["batch", d, "frames"],
                                               "logvar": ["batch", d, "frames"]}
        assert shapes["shape"]["time_ratio"] == cfg.time_ratio
    else:
        assert shapes["decoder"]["shapes"] == {"z": ["batch", d], "spectrogram": ["batch", f, cfg.n_frames]}


@pytest.mark.parametrize("name", ["digits", "music", "tiny-temporal"])
def test_real_spectrograms(exported, name):
    """A tone analysed as the library does (two windows) through onnxruntime, as codes and back, and joined
    into one longer spectrogram (temporal)."""
    ck, folder = exported[name]
    enc, dec = _sessions(folder)
    wave = tone(440, dur=1.5 * ck.spec.duration, sr=ck.spec.sample_rate)
    specs = analyse(ck, wave).specs.numpy()  # (2, F, T)
    mu, _ = enc.run(None, {"spectrogram": specs})
    assert np.abs(mu - encode(ck, specs)[0].numpy()).max() <= TOLERANCE
    assert np.abs(dec.run(None, {"z": mu})[0] - decode(ck, mu).numpy()).max() <= TOLERANCE
    joined = np.concatenate(list(specs), axis=-1)[None]  # (1, F, 2T)
    mu_joined = enc.run(None, {"spectrogram": joined})[0]
    with torch.no_grad():
        want = ck.model.decode(ck.model.encode(torch.from_numpy(joined).unsqueeze(1))[0])[:, 0].numpy()
    assert np.abs(dec.run(None, {"z": mu_joined})[0] - want).max() <= TOLERANCE


def _istft_zero_phase(db: np.ndarray, stft: dict, samples: int) -> np.ndarray:
    """dB (F, T) -> sound with zero phase, from the JSON's STFT alone (numpy; torch.istft's centred
    overlap-add with a periodic Hann window)."""
    n, hop = stft["n_fft"], stft["hop_length"]
    mag = np.vstack([10 ** (db / 20), np.zeros((1, db.shape[1]))])  # the Nyquist bin restored
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frames = np.fft.irfft(mag, n, axis=0) * window[:, None]  # (n_fft, T)
    out, norm = np.zeros(n + hop * (db.shape[1] - 1)), np.zeros(n + hop * (db.shape[1] - 1))
    for i in range(db.shape[1]):
        out[i * hop:i * hop + n] += frames[:, i]
        norm[i * hop:i * hop + n] += window**2
    return (out / np.maximum(norm, 1e-11))[n // 2:n // 2 + samples]


@pytest.mark.parametrize("name", ["digits", "music", "tiny-global"])
def test_json_turns_the_output_into_sound(exported, name):
    """sound_vae.json + numpy: the decoder's output -> dB -> zero-phase sound, as vae.generate.render."""
    ck, folder = exported[name]
    meta = json.loads((folder / CONFIG).read_text())
    _, dec = _sessions(folder)
    z = np.random.default_rng(0).standard_normal((1, *meta["shape"]["latent_shape"])).astype("f4")
    x = dec.run(None, {"z": z})[0][0]
    lo, hi = meta["levels"]["db_range"]
    db = lo + x * (hi - lo)
    want = render(ck, torch.from_numpy(z[0]), phase="zero")
    assert (want.vmin, want.vmax) == (lo, hi)
    assert np.abs(db - want.db).max() <= TOLERANCE * (hi - lo)  # dB
    wave = _istft_zero_phase(db, meta["stft"], meta["stft"]["clip_samples"])
    wave *= min(1.0, 0.99 / np.abs(wave).max())  # "playback": scale down to peak 0.99
    assert wave.shape == want.wave.shape and np.abs(wave - want.wave).max() <= 1e-4


@pytest.mark.parametrize("name", ["digits", "tiny-temporal"])
def test_json_turns_sound_into_the_input(exported, name):
    """sound_vae.json + numpy: a clip -> the encoder's input, as vae.generate.analyse (global range; a per-clip
    range for the tiny model)."""
    ck, folder = exported[name]
    meta = json.loads((folder / CONFIG).read_text())
    stft, levels = meta["stft"], meta["levels"]
    n, hop = stft["n_fft"], stft["hop_length"]
    wave = tone(300, dur=stft["clip_seconds"], sr=stft["sample_rate"], amp=0.3)[:stft["clip_samples"]]
    wave = wave / np.abs(wave).max()  # "scale the signal to peak 1.0"
    padded = np.pad(wave.astype(np.float64), n // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frames = np.stack([padded[i * hop:i * hop + n] * window for i in range(1 + len(wave) // hop)], axis=1)
    db = 20 * np.log10(np.maximum(np.abs(np.fft.rfft(frames, axis=0))[:n // 2], levels["amin"]))
    if levels["normalisation"] == "clip":
        hi = db.max()
        lo = max(db.min(), hi - levels["top_db"])
    else:
        lo, hi = levels["db_range"]
    x = np.clip((db - lo) / (hi - lo), 0, 1)
    assert np.abs(x - analyse(ck, wave).specs[0].numpy()).max() <= 1e-4


def test_readme_example_needs_no_torch(exported, tmp_path):
    """The README's example, run where `import torch` fails, gives the dB spectrogram render() gives."""
    ck, folder = exported["digits"]
    text = (ROOT / "README.md").read_text()
    code = text.split("<!-- onnx-example -->\n```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 12 and "torch" not in code
    (tmp_path / "digits-onnx").symlink_to(folder)
    run = "import sys; sys.modules['torch'] = None\n" + code + "np.save('db.npy', db); np.save('z.npy', z)\n"
    subprocess.run([sys.executable, "-c", run], cwd=tmp_path, check=True, timeout=120)
    db, z = np.load(tmp_path / "db.npy"), np.load(tmp_path / "z.npy")
    lo, hi = display_range(ck)
    assert np.abs(db - render(ck, torch.from_numpy(z[0]), phase="zero").db).max() <= TOLERANCE * (hi - lo)


def test_json_latents(exported):
    """The latent statistics are those of latents.safetensors, and the JSON's slider rule is the app's."""
    ck, folder = exported["digits"]
    lat = json.loads((folder / CONFIG).read_text())["latents"]
    stats = load_latent_stats(ck.path, ck.model_cfg.latent_shape)
    for key, t in (("mean", stats.mean), ("directions", stats.components), ("sd", stats.component_sd),
                   ("explained", stats.explained)):
        assert np.array_equal(np.asarray(lat[key], dtype=np.float32), t.numpy()), key
    mean, dirs, sd = (np.asarray(lat[k], np.float32) for k in ("mean", "directions", "sd"))
    code = np.repeat((mean + 2.0 * sd[0] * dirs[0] - 1.5 * sd[2] * dirs[2])[:, None], 48, axis=1)  # (D, T')
    want = from_sliders(stats, [2.0, 0.0, -1.5], torch.zeros(ck.model_cfg.latent_shape))
    assert np.abs(code - want.numpy()).max() <= 1e-6
    assert lat["source"] == "latents.safetensors" and 1 <= lat["sliders"] <= len(dirs)
    tiny = json.loads((exported["tiny-global"][1] / CONFIG).read_text())["latents"]
    assert tiny["source"].startswith("the prior's axes") and tiny["mean"] == [0.0] * 4 and tiny["named"] == []
    # the named sliders the app offers, with the same rule: v SD along one adds v * sd * direction to every frame
    offered = stats.named.offered()
    assert [n["property"] for n in lat["named"]] == [stats.named.names[i] for i in offered] and offered
    first = lat["named"][0]
    frame = np.asarray(first["direction"], np.float32) * first["sd"] * 1.5
    want = from_sliders(stats, [0.0], torch.zeros(ck.model_cfg.latent_shape), named=[1.5])
    assert np.abs(mean + frame - want.numpy()[:, 0]).max() <= 1e-5


def test_cli(exported, tmp_path, capsys, monkeypatch):
    """The verb writes the set and prints onnxruntime's difference with --check; bad uses get one error line."""
    source = exported["tiny-global"][0].path
    assert main(["export", "--format", "onnx", "--checkpoint", str(source), "--output", str(tmp_path / "o"),
                 "--check"]) == 0
    out = capsys.readouterr().out
    assert "encoder.onnx, decoder.onnx and sound_vae.json" in out and "onnxruntime vs PyTorch" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted([CONFIG, DECODER, ENCODER])

    def error(*argv: str) -> str:
        assert main(["export", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        return err[0]

    base = ["--format", "onnx", "--output", str(tmp_path / "e")]
    assert "is not a checkpoint" in error(*base, "--checkpoint", str(tmp_path / "missing"))
    assert "--half applies to --format checkpoint" in error(*base, "--checkpoint", str(source), "--half")
    assert "--format onnx" in error("--checkpoint", str(source), "--output", str(tmp_path / "e"), "--check")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: refused before the export
    assert "pip install onnxruntime" in error(*base, "--checkpoint", str(source), "--check")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert "pip install 'sound-vae[onnx]'" in error(*base, "--checkpoint", str(source))
    assert not (tmp_path / "e").exists()


def test_export_refuses_its_source(exported):
    source = exported["tiny-global"][0].path
    with pytest.raises(CheckpointError, match="other than its source"):
        export_onnx(source, source)
