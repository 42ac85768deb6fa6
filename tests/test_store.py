"""Dataset stores: building, reuse, layout, and skipping every kind of bad input (preprocessing.store)."""

import json
import os

import numpy as np
import pytest
from conftest import SR, TINY, chirp, noise, tone, write_fsdd_like, write_wav

from preprocessing.config import ConfigError, SpectrogramConfig
from preprocessing.store import PreprocessError, Store, build_store


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
    assert tiny_store.config.ref_db == pytest.approx(max(c["hi"] for c in tiny_store.clips))
    assert tiny_store.labels() == ["0", "1", "2"]
    assert len(tiny_store.indices("train")) == 24 and len(tiny_store.indices("test")) == 12
    assert all(c["split"] == ("test" if c["source"].split("_")[2][0] in "01" else "train")
               for c in tiny_store.clips)
    assert sorted(p.name for p in tiny_store.path.iterdir()) == ["config.json", "manifest.json", "spectrograms.npy"]


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
