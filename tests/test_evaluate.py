"""Evaluating a checkpoint on held-out audio (vae.evaluate): which files, and the figures reported."""

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY, chirp, noise, tone, write_wav

from preprocessing.audio import load_audio, resample
from preprocessing.store import PreprocessError, build_store
from vae import metrics
from vae.evaluate import evaluate, select_files
from vae.generate import reconstruct_audio

pytestmark = pytest.mark.filterwarnings("ignore:Not enough STFT frames:RuntimeWarning")  # pystoi, short clips


def _speechish(dur: float, sr: int) -> np.ndarray:
    """Chirps under a slow on/off envelope: long and busy enough for STOI to give a figure."""
    n = int(dur * sr)
    env = (0.6 + 0.4 * np.sin(2 * np.pi * 3 * np.arange(n) / sr)).astype(np.float32)
    return chirp(300, 2500, dur=dur, sr=sr) * env + noise(dur, sr=sr, amp=0.01, seed=3)


@pytest.fixture
def folder(tmp_path):
    """FSDD-named clips (takes 1-3 test, 8 train): two short 8 kHz clips, a long 16 kHz one, an empty one."""
    src = tmp_path / "clips"
    write_wav(src / "7_ann_1.wav", tone(440))
    write_wav(src / "7_ann_8.wav", chirp(300, 900))
    write_wav(src / "7_bob_2.wav", _speechish(1.2, 16000), sr=16000)
    (src / "7_ann_3.wav").write_bytes(b"")  # sorts before usable files
    (src / "readme.txt").write_text("notes")
    return src


def _expected(ck, paths, phase=None, n_iter=None, seed=None):
    """The per-file figures, computed here from the library's parts, in file order."""
    if seed is not None:
        torch.manual_seed(seed)
    rows, n_windows = [], 0
    for p in paths:
        ref = load_audio(p, metrics.EVAL_SR)
        wave = load_audio(p, ck.spec.sample_rate, min_samples=ck.spec.n_fft)
        est, a, x_hat = reconstruct_audio(ck, wave, phase, n_iter)
        est = resample(est, ck.spec.sample_rate, metrics.EVAL_SR)
        rows.append({"spectrogram_mse": metrics.spectrogram_mse(a.specs, x_hat),
                     "lsd_db": metrics.log_spectral_distance(ref, est, metrics.EVAL_SR),
                     "spectral_convergence": metrics.spectral_convergence(ref, est, metrics.EVAL_SR),
                     "stoi": metrics.stoi(ref, est, metrics.EVAL_SR)})
        n_windows += len(a.specs)
    return rows, n_windows


def _mean(rows, key):
    return round(float(np.mean([r[key] for r in rows])), 5)


def test_folder_figures_are_means_over_the_usable_files(tiny_ckpt, folder):
    calls = []
    result = evaluate(tiny_ckpt, folder, phase="zero", progress=lambda *a: calls.append(a))
    good = [folder / n for n in ("7_ann_1.wav", "7_ann_8.wav", "7_bob_2.wav")]
    rows, n_windows = _expected(tiny_ckpt, good, phase="zero")
    assert n_windows == 2 + 2 + 5  # 0.3 s and 1.2 s in windows of 0.254 s, the last one padded
    assert [math.isnan(r["stoi"]) for r in rows] == [True, True, False]  # the short clips have no STOI
    assert result == {
        "spectrogram_mse": _mean(rows, "spectrogram_mse"), "lsd_db": _mean(rows, "lsd_db"),
        "spectral_convergence": _mean(rows, "spectral_convergence"),
        "stoi": round(rows[2]["stoi"], 5), "stoi_files": 1,  # averaged over the file that has one
        "n_files": 3, "n_windows": 9, "split": "all", "phase": "zero", "griffinlim_iters": None,
        "checkpoint": None, "skipped": 2,  # readme.txt (not audio) and the empty 7_ann_3.wav
    }
    assert 0 < result["stoi"] <= 1
    # one call per evaluated file, counting the files of the split (the empty one is not reported)
    assert calls == [(1, 4, "7_ann_1.wav"), (3, 4, "7_ann_8.wav"), (4, 4, "7_bob_2.wav")]


def test_stoi_is_none_when_no_file_is_long_enough(tiny_ckpt, folder):
    result = evaluate(tiny_ckpt, folder / "7_ann_1.wav", phase="zero")
    assert result["stoi"] is None and result["stoi_files"] == 0
    assert result["n_files"] == 1 and result["n_windows"] == 2 and result["skipped"] == 0


@pytest.mark.parametrize(("split", "names"), [
    ("test", ["7_ann_1.wav", "7_bob_2.wav"]),  # takes 0-4
    ("train", ["7_ann_8.wav"]),
])
def test_folder_split(tiny_ckpt, folder, split, names):
    result = evaluate(tiny_ckpt, folder, split=split, phase="zero", with_stoi=False)
    rows, n_windows = _expected(tiny_ckpt, [folder / n for n in names], phase="zero")
    assert result["split"] == split and result["n_files"] == len(names) and result["n_windows"] == n_windows
    assert result["lsd_db"] == _mean(rows, "lsd_db")
    assert "stoi" not in result and "stoi_files" not in result


def test_griffinlim_figures_are_seeded_and_leave_the_global_generator_alone(tiny_ckpt, folder):
    ck = dataclasses.replace(tiny_ckpt, spec=tiny_ckpt.spec.replace(griffinlim_iters=3))
    path = folder / "7_ann_8.wav"
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    result = evaluate(ck, path, with_stoi=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    rows, _ = _expected(ck, [path], seed=0)  # Griffin-Lim's random start phases, seeded with 0
    assert result["lsd_db"] == _mean(rows, "lsd_db")
    assert result["spectral_convergence"] == _mean(rows, "spectral_convergence")
    assert (result["phase"], result["griffinlim_iters"]) == ("griffinlim", 3)
    assert evaluate(ck, path, with_stoi=False, n_iter=2)["griffinlim_iters"] == 2
    rows, _ = _expected(ck, [path], n_iter=2, seed=0)
    assert evaluate(ck, path, with_stoi=False, n_iter=2)["lsd_db"] == _mean(rows, "lsd_db")


@pytest.mark.parametrize(("sample_rate", "duration", "with_stoi"), [
    (16000, 0.127, True),  # STOI, a speech measure, is on by default up to 16 kHz
    (16001, 0.127, False),  # ... and not one hertz above
    (22050, 0.09215, False),
])
def test_stoi_by_default_only_up_to_16k(tiny_ckpt, folder, sample_rate, duration, with_stoi):
    spec = tiny_ckpt.spec.replace(sample_rate=sample_rate, duration=duration)
    assert spec.shape == TINY.shape
    ck = dataclasses.replace(tiny_ckpt, spec=spec)
    result = evaluate(ck, folder / "7_bob_2.wav", phase="zero")
    assert ("stoi" in result) is with_stoi and ("stoi_files" in result) is with_stoi
    rows, _ = _expected(ck, [folder / "7_bob_2.wav"], phase="zero")
    assert result["lsd_db"] == _mean(rows, "lsd_db")


def test_checkpoint_path_is_reported(tiny_ckpt, folder, tmp_path):
    ck = dataclasses.replace(tiny_ckpt, path=tmp_path / "ck")
    result = evaluate(ck, folder / "7_ann_1.wav", phase="zero", with_stoi=False)
    assert result["checkpoint"] == str(tmp_path / "ck")


def test_nothing_evaluable(tiny_ckpt, tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    write_wav(tmp_path / "b.wav", tone(300)[:40])  # shorter than one STFT frame
    with pytest.raises(PreprocessError, match="none of the 2 files could be evaluated"):
        evaluate(tiny_ckpt, tmp_path)


def test_select_files_of_a_store(tiny_store, fsdd_dir):
    files, skipped, split = select_files(tiny_store.path)  # a store's test split by default
    assert split == "test" and skipped == []
    assert files == sorted(fsdd_dir / c["source"] for c in tiny_store.clips if c["split"] == "test")
    assert len(files) == 12
    files, _, split = select_files(tiny_store.path, "train")
    assert split == "train" and len(files) == 24 and all(int(f.stem.split("_")[2]) >= 5 for f in files)
    files, _, split = select_files(tiny_store.path, "all")
    assert split == "all" and files == sorted(fsdd_dir.glob("*.wav"))


def test_select_files_of_a_store_whose_audio_moved(tmp_path):
    src = tmp_path / "in"
    for t in (1, 6, 7):
        write_wav(src / f"2_cy_{t}.wav", chirp(300 + 50 * t, 1200))
    build_store(src, tmp_path / "store", TINY)
    assert len(select_files(tmp_path / "store", "all")[0]) == 3
    (src / "2_cy_6.wav").unlink()
    assert select_files(tmp_path / "store")[0] == [src.resolve() / "2_cy_1.wav"]  # the test file is still there
    with pytest.raises(PreprocessError, match=r"which no longer holds 1 of its files \(e\.g\. .*2_cy_6\.wav\); "
                                              r"evaluate the audio folder instead"):
        select_files(tmp_path / "store", "train")
    shutil.rmtree(src)
    with pytest.raises(PreprocessError, match="no longer holds 2 of its files"):
        select_files(tmp_path / "store", "train")


def test_select_files_of_a_folder(folder):
    files, skipped, split = select_files(folder)  # every file of a folder by default
    assert split == "all"
    assert [f.name for f in files] == ["7_ann_1.wav", "7_ann_3.wav", "7_ann_8.wav", "7_bob_2.wav"]
    assert [(s.path, s.reason) for s in skipped] == [(str(folder / "readme.txt"), "unsupported format '.txt'")]
    assert [f.name for f in select_files(folder, "train")[0]] == ["7_ann_8.wav"]
    assert select_files(folder / "7_ann_8.wav") == ([folder / "7_ann_8.wav"], [], "all")
    with pytest.raises(PreprocessError, match=r"no audio files of split 'train' in .*7_ann_1\.wav"):
        select_files(folder / "7_ann_1.wav", "train")


# ---------------------------------------------------------------------------- compare (one clip)


def test_compare_phase_only_uses_each_windows_own_range(tiny_ckpt):
    """Under per-clip normalisation each window has its own dB range: the phase-only sound is the
    original windows through the phase method in *those* ranges (not the model's display range)."""
    from vae.evaluate import compare
    from vae.generate import to_wave

    ck = dataclasses.replace(tiny_ckpt, spec=TINY.replace(normalisation="clip", ref_db=None))
    wave = np.concatenate([tone(300, amp=0.05), chirp(200, 2000, amp=0.8)])  # quiet then loud: unlike ranges
    c = compare(ck, wave, TINY.sample_rate, "zero")
    _, a, _ = reconstruct_audio(ck, wave, "zero")
    assert len({r for r in a.ranges}) > 1
    expected = to_wave(ck, a.specs, a.ranges, "zero")[: a.length] / a.gain
    np.testing.assert_allclose(c.phase_only, expected, rtol=0, atol=1e-7)
    assert not np.allclose(c.phase_only, to_wave(ck, a.specs, None, "zero")[: a.length] / a.gain, atol=1e-3)


def test_compare_uses_the_given_griffin_lim_iterations_for_both_sounds(tiny_ckpt):
    """Griffin-Lim from the same seed: both the reconstruction and the phase-only sound use ``n_iter``."""
    from vae.evaluate import compare
    from vae.generate import to_wave

    wave = chirp(200, 2000)
    torch.manual_seed(5)
    c = compare(tiny_ckpt, wave, TINY.sample_rate, "griffinlim", 3)
    torch.manual_seed(5)
    recon, a, _ = reconstruct_audio(tiny_ckpt, wave, "griffinlim", 3)
    phase_only = to_wave(tiny_ckpt, a.specs, a.ranges, "griffinlim", 3)[: a.length] / a.gain
    np.testing.assert_array_equal(c.reconstruction, recon)
    np.testing.assert_allclose(c.phase_only, phase_only, rtol=0, atol=1e-7)
    assert c.n_iter == 3 and TINY.griffinlim_iters != 3
