"""Dataset stores: building, reuse, layout, and skipping every kind of bad input (preprocessing.store)."""

import dataclasses
import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, TINY, chirp, noise, tone, write_fsdd_like, write_wav

from preprocessing.config import ConfigError, SpectrogramConfig
from preprocessing.spectrogram import log_spectrogram
from preprocessing.store import PreprocessError, Skipped, Store, StoreSummary, build_store, find_audio


def _files_state(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir() if p.is_file()}


def test_store_layout(tiny_store, fsdd_dir):
    assert len(tiny_store) == 36
    specs = np.load(tiny_store.path / "spectrograms.npy", mmap_mode="r")
    assert isinstance(specs, np.memmap)
    assert specs.dtype == np.float32 and specs.shape == (36, 32, 64)
    assert np.isfinite(specs).all() and specs.min() >= 0.0 and specs.max() == pytest.approx(1.0, abs=1e-4)
    clip = tiny_store.clips[0]
    assert set(clip) == {"source", "offset", "label", "speaker", "split", "lo", "hi", "gain"}
    assert clip["source"] == "0_alice_0.wav" and clip["label"] == "0" and clip["speaker"] == "alice"
    meta = json.loads((tiny_store.path / "config.json").read_text())
    assert meta["spectrogram"]["ref_db"] is not None and meta["fingerprint"] and meta["skipped"] == []
    ref = _peak_db_by_file(fsdd_dir)
    train_files = [c["source"] for c in tiny_store.clips if c["split"] == "train"]
    assert tiny_store.config.ref_db == pytest.approx(max(ref[f] for f in train_files), abs=2e-3)
    assert all((c["lo"], c["hi"]) == (tiny_store.config.ref_db - 80.0, tiny_store.config.ref_db)
               for c in tiny_store.clips)
    assert tiny_store.labels() == ["0", "1", "2"]
    assert len(tiny_store.indices("train")) == 24 and len(tiny_store.indices("test")) == 12
    assert all(c["split"] == ("test" if c["source"].split("_")[2][0] in "01" else "train")
               for c in tiny_store.clips)
    assert sorted(p.name for p in tiny_store.path.iterdir()) == ["config.json", "manifest.json", "spectrograms.npy"]


def _db(path, cfg=TINY):
    """dB spectrogram of a one-window clip, peak-normalised, computed here from the file."""
    wave, sr = sf.read(str(path), dtype="float32")
    assert sr == cfg.sample_rate and len(wave) >= cfg.n_samples
    return log_spectrogram(wave[: cfg.n_samples] / np.abs(wave).max(), cfg).numpy()


def _peak_db_by_file(folder):
    return {p.name: float(_db(p).max()) for p in sorted(folder.glob("*.wav"))}


def test_spectrograms_are_the_db_spectrograms_in_the_global_range(tiny_store, fsdd_dir):
    """Each stored spectrogram is its clip's dB spectrogram mapped from [ref_db - top_db, ref_db] to [0, 1]."""
    ref = tiny_store.config.ref_db
    for i in (0, 7, 20, 35):
        expected = np.clip((_db(fsdd_dir / tiny_store.clips[i]["source"]) - (ref - 80.0)) / 80.0, 0.0, 1.0)
        np.testing.assert_allclose(tiny_store.specs[i], expected, atol=2e-4)  # batched STFT rounds differently


def test_ref_db_comes_from_the_training_split_only(tmp_path):
    """A test clip louder (in its loudest bin) than every training clip must not set the range: a pure tone
    puts all its energy in one bin, peak-normalised noise spreads it."""
    src = tmp_path / "in"
    for t in (5, 6, 7):
        write_wav(src / f"3_erin_{t}.wav", noise(amp=0.9, seed=t))
    write_wav(src / "3_erin_1.wav", noise(amp=0.9, seed=1))
    write_wav(src / "3_erin_0.wav", tone(1000, amp=0.9))  # 1000 Hz: exactly bin 8 of 125 Hz bins
    build_store(src, tmp_path / "s", TINY)
    store = Store(tmp_path / "s")
    split = {c["source"]: c["split"] for c in store.clips}
    assert split == {"3_erin_0.wav": "test", "3_erin_1.wav": "test",
                     "3_erin_5.wav": "train", "3_erin_6.wav": "train", "3_erin_7.wav": "train"}
    peaks = _peak_db_by_file(src)
    train_max = max(peaks[f"3_erin_{t}.wav"] for t in (5, 6, 7))
    assert peaks["3_erin_0.wav"] > train_max + 3.0  # the test tone is clearly the loudest
    assert store.config.ref_db == pytest.approx(train_max, abs=2e-3)
    assert store.config.ref_db < peaks["3_erin_0.wav"]
    tone_spec = store.specs[[c["source"] for c in store.clips].index("3_erin_0.wav")]
    assert float(tone_spec.max()) == 1.0  # above the training range: clipped at the top


def _small_folder(root):
    """Six one-window clips in two class folders (not FSDD names: the split follows test_fraction)."""
    for g, f0 in (("low", 300), ("high", 1500)):
        for i in range(3):
            write_wav(root / g / f"{g}{i}.wav", chirp(f0 + 40 * i, 2 * f0) + noise(amp=0.05, seed=i))
    return root


# one changed value for every SpectrogramConfig field (ref_db is computed by the store, not asked for)
CHANGES = {"sample_rate": 16000, "duration": 0.3, "n_fft": 128, "hop_length": 16, "normalisation": "clip",
           "top_db": 60.0, "peak_normalise": False, "windowing": "first", "phase": "zero", "griffinlim_iters": 8}


def test_every_parameter_forces_a_rebuild_and_nothing_else_does(tmp_path):
    assert set(CHANGES) | {"ref_db"} == {f.name for f in dataclasses.fields(SpectrogramConfig)}
    src, out = _small_folder(tmp_path / "in"), tmp_path / "store"
    assert not build_store(src, out, TINY).reused
    assert build_store(src, out, TINY).reused
    assert build_store(src, out, TINY.replace(ref_db=99.0)).reused  # an asked-for ref_db is ignored
    assert Store(out).config.ref_db != 99.0
    for name, value in CHANGES.items():
        build_store(src, out, TINY)  # back to the base store (a rebuild after the previous change)
        assert build_store(src, out, TINY).reused
        cfg = TINY.replace(**{name: value})
        assert not build_store(src, out, cfg).reused, name  # differs from the base in this field only
        assert getattr(Store(out).config, name) == value, name
        assert build_store(src, out, cfg).reused, name


def test_changed_test_fraction_rebuilds_with_the_new_split(tmp_path):
    src, out = _small_folder(tmp_path / "in"), tmp_path / "store"
    first = build_store(src, out, TINY, test_fraction=0.1)
    assert sum(c["split"] == "test" for c in Store(out).clips) == 1  # round(0.6) -> at least one
    assert build_store(src, out, TINY, test_fraction=0.1).reused
    again = build_store(src, out, TINY, test_fraction=0.5)
    assert not again.reused
    store = Store(out)
    assert sum(c["split"] == "test" for c in store.clips) == 3 and store.meta["test_fraction"] == 0.5
    assert build_store(src, out, TINY, test_fraction=0.5).reused
    assert not first.reused


def test_summary(tiny_store):
    s = tiny_store.summary()
    assert (s.n_clips, s.n_files, s.shape) == (36, 36, (32, 64))
    assert s.per_label["1"] == {"train": 8, "test": 4}
    assert "36 clips from 36 files" in s.to_text()


def test_reuse_and_rebuild(fsdd_dir, tmp_path):
    out = tmp_path / "store"
    events = []
    first = build_store(fsdd_dir, out, TINY, progress=lambda d, n, name: events.append((d, n)))
    assert not first.reused and events[-1] == (36, 36)
    before = _files_state(out)
    again = build_store(fsdd_dir, out, TINY)
    assert again.reused and again.n_clips == first.n_clips
    assert _files_state(out) == before  # untouched
    changed = build_store(fsdd_dir, out, TINY.replace(hop_length=16, duration=0.252))
    assert not changed.reused and changed.shape == (32, 127)
    assert Store(out).specs.shape == (36, 32, 127)
    assert not build_store(fsdd_dir, out, TINY.replace(hop_length=16, duration=0.252), reuse=False).reused
    assert not list(tmp_path.glob(".store.tmp-*"))  # no temporary leftovers


def test_changed_input_rebuilds(tmp_path):
    src = tmp_path / "in"
    write_fsdd_like(src)
    build_store(src, tmp_path / "out", TINY)
    write_wav(src / "2_carol_9.wav", chirp(500, 900))
    s = build_store(src, tmp_path / "out", TINY)
    assert not s.reused and s.n_files == 37


def test_long_files_give_consecutive_windows_in_one_split(tmp_path):
    src = tmp_path / "genres_original"
    for g in ("jazz", "rock"):
        for i in range(5):
            write_wav(src / g / f"{g}.{i:05d}.wav", chirp(200 + 50 * i, 3000, dur=1.0) + noise(1.0, amp=0.05, seed=i))
    build_store(src, tmp_path / "s", TINY, test_fraction=0.2)
    store = Store(tmp_path / "s")
    assert len(store) == 40  # 1 s = 3.94 windows of 0.254 s -> 4 each
    by_file = {}
    for c in store.clips:
        by_file.setdefault(c["source"], []).append(c)
    assert len(by_file) == 10
    for source, clips in by_file.items():
        assert [c["offset"] for c in clips] == [0.0, 0.254, 0.508, 0.762]
        assert len({c["split"] for c in clips}) == 1, source
        assert clips[0]["label"] == source.split("/")[0]
    assert sum(clips[0]["split"] == "test" for clips in by_file.values()) == 2
    assert "@ 0.25s" in store.clip_name(1)


def test_file_list_input(fsdd_dir, tmp_path):
    """A list of file paths (no copying) builds a store of just those files."""
    files = sorted(fsdd_dir.glob("1_*.wav"))
    s = build_store(files, tmp_path / "s", TINY)
    assert s.n_files == 12 and set(s.per_label) == {"1"}


def _bad_folder(root):
    """Good clips plus one of every kind of bad input; returns {file name: expected reason}."""
    for t in (0, 5, 6):
        write_wav(root / f"4_dave_{t}.wav", tone(500 + 30 * t))
    (root / "corrupt.wav").write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8)))
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("definitely not audio\n" * 20)
    write_wav(root / "short.wav", tone(300)[:40])  # fewer samples than one 64-sample frame
    write_wav(root / "silent.wav", np.zeros(2400, np.float32))
    nan, inf = tone(300), tone(300)
    nan[10], inf[20] = np.nan, -np.inf
    write_wav(root / "nan.wav", nan, subtype="FLOAT")
    write_wav(root / "inf.wav", inf, subtype="FLOAT")
    (root / "readme.txt").write_text("notes")
    (root / "data.xyz").write_bytes(b"\x00\x01")
    return {"corrupt.wav": "not readable as audio", "empty.wav": "empty file (0 bytes)",
            "text.wav": "not readable as audio", "short.wav": "too short", "silent.wav": "all-silent",
            "nan.wav": "NaN or infinite", "inf.wav": "NaN or infinite",
            "readme.txt": "unsupported format '.txt'", "data.xyz": "unsupported format '.xyz'"}


@pytest.mark.parametrize("normalisation", ["global", "clip"])
def test_bad_inputs_are_skipped_with_reasons(tmp_path, normalisation):
    expected = _bad_folder(tmp_path / "in")
    s = build_store(tmp_path / "in", tmp_path / "out", TINY.replace(normalisation=normalisation))
    reasons = {os.path.basename(k.path): k.reason for k in s.skipped}
    assert set(reasons) == set(expected)
    for name, reason in expected.items():
        assert reason in reasons[name], (name, reasons[name])
    assert reasons["silent.wav"] == "all-silent audio (peak below -80 dBFS)"
    assert reasons["short.wav"] == "too short: 0.005s, less than one STFT frame (64 samples at 8000 Hz)"
    assert {k.path for k in s.skipped} == {str(tmp_path / "in" / name) for name in expected}
    assert s.n_clips == 3 and s.n_files == 3
    specs = Store(tmp_path / "out").specs
    assert np.isfinite(specs).all() and specs.min() >= 0 and specs.max() <= 1
    assert "skipped 9 files" in s.to_text()
    meta = json.loads((tmp_path / "out" / "config.json").read_text())
    assert len(meta["skipped"]) == 9


def test_silent_windows_left_out_under_clip_normalisation(tmp_path):
    """A file whose second half is silence: that window is dropped, nothing divides by zero."""
    wave = np.concatenate([tone(440, dur=0.254), np.zeros(2032, np.float32)])
    write_wav(tmp_path / "in" / "half.wav", wave)
    write_wav(tmp_path / "in" / "other.wav", chirp(300, 900, dur=0.254))
    for norm in ("clip", "global"):
        s = build_store(tmp_path / "in", tmp_path / norm, TINY.replace(normalisation=norm))
        assert s.n_clips == 2 and s.silent_windows == 1
        store = Store(tmp_path / norm)
        assert np.isfinite(store.specs).all()
        assert all(c["hi"] > c["lo"] for c in store.clips)


def test_gtzan_like_corrupt_file_is_skipped(tmp_path):
    genres = tmp_path / "genres_original"
    for i in range(3):
        write_wav(genres / "jazz" / f"jazz.{i:05d}.wav", tone(300 + 100 * i))
        write_wav(genres / "blues" / f"blues.{i:05d}.wav", chirp(200, 800 + 100 * i))
    bad = genres / "jazz" / "jazz.00054.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))  # a WAV header that lies
    s = build_store(genres, tmp_path / "out", TINY)
    assert [os.path.basename(k.path) for k in s.skipped] == ["jazz.00054.wav"]
    assert "not readable" in s.skipped[0].reason
    assert s.per_label["jazz"]["train"] + s.per_label["jazz"].get("test", 0) == 3


def test_no_audio_at_all(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x")
    with pytest.raises(PreprocessError, match="no audio files found"):
        build_store(tmp_path / "in", tmp_path / "out", TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreprocessError, match="no audio files found"):
        build_store(tmp_path / "empty", tmp_path / "out", TINY)
    with pytest.raises(PreprocessError, match="does not exist"):
        build_store(tmp_path / "missing", tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()


def test_nothing_usable(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"")
    write_wav(tmp_path / "in" / "b.wav", np.zeros(3000, np.float32))
    with pytest.raises(PreprocessError, match="none of the 2 audio files") as e:
        build_store(tmp_path / "in", tmp_path / "out", TINY)
    assert "empty file" in str(e.value) and "silent" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no store, no temporary folder


def test_bad_config_rejected_before_work(fsdd_dir, tmp_path):
    bad = SpectrogramConfig(sample_rate=SR, duration=-0.5)
    with pytest.raises(ConfigError, match="duration"):
        build_store(fsdd_dir, tmp_path / "out", bad)
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_a_folder_that_is_not_a_store(fsdd_dir, tmp_path):
    precious = tmp_path / "my_music"
    write_wav(precious / "song.wav", tone(200))
    with pytest.raises(PreprocessError, match="not a dataset store"):
        build_store(fsdd_dir, precious, TINY)
    assert (precious / "song.wav").is_file()
    (tmp_path / "empty").mkdir()
    assert build_store(fsdd_dir, tmp_path / "empty", TINY).n_clips == 36  # an empty folder is fine


def test_not_a_store(tmp_path):
    with pytest.raises(PreprocessError, match="not a dataset store"):
        Store(tmp_path)


def test_stale_store_is_rebuilt(fsdd_dir, tmp_path):
    out = tmp_path / "s"
    build_store(fsdd_dir, out, TINY)
    (out / "manifest.json").unlink()
    s = build_store(fsdd_dir, out, TINY)
    assert not s.reused and (out / "manifest.json").is_file()


def test_summary_text_lists_labels_silence_and_skipped_files():
    summary = StoreSummary(
        path="s", n_clips=6, n_files=4, shape=(32, 64), duration_s=600.0,
        per_label={"b": {"train": 2}, "a": {"train": 2, "test": 1}, "c": {"test": 1}},
        skipped=[Skipped("in/bad.wav", "empty file (0 bytes)"), Skipped("in/x.txt", "unsupported format '.txt'")],
        silent_windows=2, reused=True)
    assert summary.to_text() == (
        "6 clips from 4 files (10.0 min), spectrograms 32x64 [reused]\n"
        "  a: train 2, test 1\n"
        "  b: train 2, test 0\n"
        "  c: train 0, test 1\n"
        "  2 silent windows left out\n"
        "skipped 2 files:\n"
        "  in/bad.wav: empty file (0 bytes)\n"
        "  in/x.txt: unsupported format '.txt'")
    fresh = StoreSummary(path="s", n_clips=2, n_files=2, shape=(8, 16), duration_s=1.5,
                         per_label={"(unlabelled)": {"train": 1, "test": 1}})
    assert fresh.to_text() == "2 clips from 2 files (0.0 min), spectrograms 8x16\n  (unlabelled): train 1, test 1"


def test_store_api(tiny_store):
    assert isinstance(tiny_store.specs, np.memmap)  # read lazily, never loaded whole
    assert tiny_store.indices() == list(range(36))
    train, test = tiny_store.indices("train"), tiny_store.indices("test")
    assert sorted(train + test) == list(range(36)) and all(tiny_store.clips[i]["split"] == "test" for i in test)
    assert tiny_store.clip_name(0) == "0_alice_0.wav"  # a clip at the start of its file: just the file


def test_store_contents_in_detail(tmp_path):
    """Manifest entries, metadata and summary of a store with a long file (three windows, one of them
    silence), an unlabelled short file, a file whose only window is silent and a non-audio file."""
    src = tmp_path / "in"
    cfg = TINY.replace(duration=0.254875)  # 2039 samples: window offsets with more than 4 decimals
    long_wave = np.concatenate([tone(500, dur=0.25, amp=0.4), np.zeros(2100, np.float32), chirp(300, 900, amp=0.8)])
    write_wav(src / "birds" / "long.wav", long_wave)
    write_wav(src / "loose.wav", noise(amp=0.25, seed=3))
    write_wav(src / "late.wav", np.concatenate([np.zeros(2400, np.float32), tone(700, amp=0.5)]))
    (src / "notes.md").write_text("x")
    calls = []
    summary = build_store(src, tmp_path / "out" / "nested" / "store", cfg.replace(windowing="first"),
                          progress=lambda *a: calls.append(a))
    assert calls == [(1, 3, "birds/long.wav"), (2, 3, "late.wav"), (3, 3, "loose.wav")]  # skipped files too
    assert {os.path.basename(s.path): s.reason for s in summary.skipped} == {
        "notes.md": "unsupported format '.md'", "late.wav": "all windows are silent"}  # its sound starts later

    out = tmp_path / "store"
    summary = build_store(src, out, cfg, test_fraction=0.5)
    store = Store(out)
    assert [(c["source"], c["offset"], c["label"], c["speaker"]) for c in store.clips] == [
        ("birds/long.wav", 0.0, "birds", None), ("birds/long.wav", round(2 * 2039 / 8000, 4), "birds", None),
        ("late.wav", round(2039 / 8000, 4), None, None), ("loose.wav", 0.0, None, None)]
    assert store.clips[2]["offset"] == 0.2549 and store.clip_name(1) == "birds/long.wav @ 0.51s"
    gains = {c["source"]: c["gain"] for c in store.clips}
    assert gains["birds/long.wav"] == pytest.approx(1 / 0.8, rel=1e-3)  # 1 / the file's peak
    assert gains["loose.wav"] == pytest.approx(1 / np.abs(noise(amp=0.25, seed=3)).max(), rel=1e-3)
    assert store.labels() == ["birds"]
    meta = json.loads((out / "config.json").read_text())
    assert set(meta) == {"version", "spectrogram", "input", "fingerprint", "test_fraction", "created", "skipped",
                         "silent_windows"}
    assert meta["version"] == 1 and meta["input"] == str(src.resolve()) and meta["test_fraction"] == 0.5
    assert time.strptime(meta["created"], "%Y-%m-%d %H:%M:%S")
    assert meta["skipped"] == [{"path": str(src / "notes.md"), "reason": "unsupported format '.md'"}]
    splits = {c["source"]: c["split"] for c in store.clips}
    assert sorted(splits.values()) == ["test", "test", "train"]  # round(0.5 * 3 files) = 2 test files
    per_label = {"birds": {splits["birds/long.wav"]: 2},
                 "(unlabelled)": dict(Counter([splits["late.wav"], splits["loose.wav"]]))}
    assert summary == StoreSummary(
        path=str(out), n_clips=4, n_files=3, shape=(32, 64), duration_s=pytest.approx(4 * 0.254875),
        per_label=per_label, skipped=[Skipped(str(src / "notes.md"), "unsupported format '.md'")],
        silent_windows=2, reused=False)  # the silent middle of long.wav, the silent start of late.wav


def test_store_messages(tiny_store, fsdd_dir, tmp_path):
    with pytest.raises(PreprocessError, match=re.escape(
            f"{tmp_path} is not a dataset store (no config.json); create one with `python -m vae preprocess`")):
        Store(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_store.path, broken)
    np.save(broken / "spectrograms.npy", np.zeros((36, 32, 63), np.float32))
    with pytest.raises(PreprocessError, match=re.escape(
            f"{broken}: spectrograms.npy has shape (36, 32, 63), manifest and config expect (36, 32, 64)")):
        Store(broken)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreprocessError, match=re.escape(
            f"output {tmp_path / 'file'} exists and is not a dataset store; choose a new or empty folder")):
        build_store(fsdd_dir, tmp_path / "file", TINY)


def test_nothing_usable_names_the_first_five_reasons(tmp_path):
    for i in range(6):
        (tmp_path / "in" / f"e{i}.wav").parent.mkdir(exist_ok=True)
        (tmp_path / "in" / f"e{i}.wav").write_bytes(b"")
    with pytest.raises(PreprocessError) as e:
        build_store(tmp_path / "in", tmp_path / "out", TINY)
    reasons = "; ".join(f"e{i}.wav: empty file (0 bytes)" for i in range(5))
    assert str(e.value) == f"none of the 6 audio files in {tmp_path / 'in'} could be used ({reasons})"


def test_finding_audio(tmp_path):
    src = tmp_path / "in"
    write_wav(src / "a.wav", tone(300))
    write_wav(src / "sub" / "b.WAV", tone(400))
    write_wav(src / ".hidden.wav", tone(500))
    write_wav(src / ".cache" / "c.wav", tone(600))
    (src / "README").write_text("x")
    root, audio, skipped = find_audio(src)
    assert root == src and audio == [src / "a.wav", src / "sub" / "b.WAV"]
    assert skipped == [Skipped(str(src / "README"), "unsupported format '(no extension)'")]
    assert find_audio(src / "a.wav") == (src, [src / "a.wav"], [])
    # a list of files: the root is their common folder, and missing files are reported
    root, audio, skipped = find_audio([src / "sub" / "b.WAV", src / "gone.wav", src / "a.wav"])
    assert root == src and audio == [src / "a.wav", src / "sub" / "b.WAV"]
    assert skipped == [Skipped(str(src / "gone.wav"), "file not found")]
    with pytest.raises(PreprocessError, match=r"^no input files given$"):
        find_audio([])
    with pytest.raises(PreprocessError, match=re.escape(f"none of the 2 input files exist (e.g. {src / 'x.wav'})")):
        find_audio([src / "y.wav", src / "x.wav"])
    with pytest.raises(PreprocessError, match=re.escape(
            f"no audio files found in {src} (looked for .wav, .flac, .ogg, .mp3, .aiff)")):
        find_audio([src / "README", src / "sub" / "README"])


def test_default_split_and_unnormalised_levels(tmp_path):
    """Without peak normalisation the gain is 1 and levels are the file's own; by default a tenth of
    the (non-FSDD) files, at least one, is held out."""
    src = _small_folder(tmp_path / "in")
    summary = build_store(src, tmp_path / "s", TINY.replace(peak_normalise=False))
    store = Store(tmp_path / "s")
    assert sum(c["split"] == "test" for c in store.clips) == 1 and summary.n_clips == 6
    assert all(c["gain"] == 1.0 for c in store.clips)
    ref = store.config.ref_db
    for i, c in enumerate(store.clips):
        wave, _ = sf.read(str(src / c["source"]), dtype="float32")
        db = log_spectrogram(wave[:TINY.n_samples], TINY).numpy()
        np.testing.assert_allclose(store.specs[i], np.clip((db - (ref - 80.0)) / 80.0, 0, 1), atol=2e-4)


def test_clip_normalisation_maps_each_clip_to_its_own_range(tmp_path):
    src = _small_folder(tmp_path / "in")
    build_store(src, tmp_path / "s", TINY.replace(normalisation="clip"))
    store = Store(tmp_path / "s")
    assert store.config.ref_db is None
    for i, c in enumerate(store.clips):
        db = _db(src / c["source"])
        hi = float(db.max())
        lo = max(float(db.min()), hi - 80.0)
        assert (c["lo"], c["hi"]) == pytest.approx((lo, hi), abs=1e-3)
        np.testing.assert_allclose(store.specs[i], np.clip((db - lo) / (hi - lo), 0, 1), atol=2e-4)


def test_ref_db_from_all_clips_when_there_is_no_training_split(tmp_path):
    src = tmp_path / "in"
    for t, amp in ((0, 0.9), (1, 0.3), (2, 0.6)):  # FSDD takes 0-4: all test
        write_wav(src / f"5_fay_{t}.wav", chirp(400 + 100 * t, 1500, amp=amp) + noise(amp=0.02, seed=t))
    build_store(src, tmp_path / "s", TINY)
    store = Store(tmp_path / "s")
    assert {c["split"] for c in store.clips} == {"test"}
    assert store.config.ref_db == pytest.approx(max(_peak_db_by_file(src).values()), abs=2e-3)
    assert store.config.ref_db == round(store.config.ref_db, 3)  # stored to a thousandth of a dB


def test_summary_of_a_store_written_before_skips_and_silence_were_recorded(tiny_store, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(tiny_store.path, old)
    meta = json.loads((old / "config.json").read_text())
    del meta["skipped"], meta["silent_windows"]
    (old / "config.json").write_text(json.dumps(meta))
    summary = Store(old).summary()
    assert summary.skipped == [] and summary.silent_windows == 0 and summary.n_clips == 36


def test_store_specs_are_a_read_only_memory_map(tiny_store):
    """Stores larger than memory must stay on disk: ``specs`` maps the file instead of loading it."""
    store = Store(tiny_store.path)
    assert isinstance(store.specs, np.memmap)
    assert Path(store.specs.filename) == (tiny_store.path / "spectrograms.npy").resolve()
    assert not store.specs.flags.writeable
