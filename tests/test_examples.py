"""The shipped example clips (examples/digits, examples/music) and the scripts that make them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import music_tools_missing

from preprocessing.labels import FSDD_NAME

ROOT = Path(__file__).resolve().parents[1]
DIGITS_DIR = ROOT / "examples" / "digits"
SCRIPT = ROOT / "scripts" / "make_examples.py"
MUSIC_DIR = ROOT / "examples" / "music"
MUSIC_SCRIPT = ROOT / "scripts" / "make_music_examples.py"
# The scripts import the package: installed (make test) or, as here, from the repository root.
SCRIPT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def load_script(path: Path, monkeypatch):
    """Import a script as a module (dataclasses look their module up in sys.modules)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, script)
    spec.loader.exec_module(script)
    return script


def check_clip(path: Path) -> None:
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16"), path.name
    wave, _ = sf.read(str(path), dtype="float32")
    assert np.isfinite(wave).all(), path.name
    assert 0.2 <= len(wave) / 8000 <= 1.2, f"{path.name}: {len(wave) / 8000:.3f} s"
    peak = np.abs(wave).max()
    assert 0.5 < peak <= 1.0, f"{path.name}: peak {peak:.3f}"  # normalised to about -1 dBFS, not silent
    assert np.sqrt(np.mean(wave**2)) > 0.01, f"{path.name} is nearly silent"


def test_example_digits_cover_ten_digits_in_three_voices():
    files = sorted(DIGITS_DIR.glob("*.wav"))
    assert len(files) >= 30
    digits_by_speaker = defaultdict(set)
    for path in files:
        m = FSDD_NAME.match(path.stem)
        assert m, f"{path.name} is not named {{digit}}_{{speaker}}_{{take}}.wav"
        assert m.group(2) == m.group(2).lower(), path.name
        digits_by_speaker[m.group(2)].add(m.group(1))
        check_clip(path)
    complete = [s for s, d in digits_by_speaker.items() if d == set("0123456789")]
    assert len(complete) >= 3, dict(digits_by_speaker)


def test_examples_readme_says_how_they_were_made():
    text = (ROOT / "examples" / "README.md").read_text()
    for needle in ("scripts/make_examples.py", "espeak-ng", "synthetic", "not", "FSDD", "CC0"):
        assert needle in text


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_script_makes_one_clip(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path), "--digits", "7",
                           "--voices", "espeakf"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=SCRIPT_ENV)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["7_espeakf_0.wav"]
    check_clip(tmp_path / "7_espeakf_0.wav")
    assert "7_espeakf_0.wav" in proc.stdout and "1 clips" in proc.stdout


def test_script_fails_clearly_without_espeak(tmp_path, monkeypatch, capsys):
    script = load_script(SCRIPT, monkeypatch)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    assert script.main(["--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "espeak-ng was not found on PATH" in err and "apt-get install espeak-ng" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- examples/music


def check_music_clip(path: Path) -> None:
    """A few seconds of 22,050 Hz mono 16-bit audio, peak about 0.9, sounding throughout, with changing notes."""
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16"), path.name
    wave, sr = sf.read(str(path), dtype="float64")
    assert 3.0 <= len(wave) / sr <= 6.5, f"{path.name}: {len(wave) / sr:.2f} s"
    assert 0.85 <= np.abs(wave).max() <= 0.95, f"{path.name}: peak {np.abs(wave).max():.3f}"
    frames = wave[: len(wave) // 2205 * 2205].reshape(-1, 2205)  # 100 ms
    rms_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert rms_db.max() > -25, f"{path.name} is nearly silent"
    assert np.mean(rms_db > rms_db.max() - 40) >= 0.9, f"{path.name} has long silences"
    loudest_bin = np.abs(np.fft.rfft(frames * np.hanning(2205), axis=1))[:, 1:].argmax(axis=1)
    assert len(set(loudest_bin.tolist())) >= 4, f"{path.name}: the loudest pitch hardly changes"


def test_music_examples_are_a_few_short_clips():
    files = sorted(MUSIC_DIR.glob("*.wav"))
    assert 4 <= len(files) <= 6, [p.name for p in files]
    for path in files:
        check_music_clip(path)
    assert sum(p.stat().st_size for p in files) < 1.5e6


def test_examples_readme_credits_the_music_sources():
    text = (ROOT / "examples" / "README.md").read_text()
    for needle in ("scripts/make_music_examples.py", "music21", "public domain", "FluidR3_GM", "MIT", "fluidsynth"):
        assert needle in text
    for path in MUSIC_DIR.glob("*.wav"):
        assert f"`{path.name}`" in text, f"{path.name} is not described in examples/README.md"


@pytest.mark.skipif(bool(music_tools_missing()), reason=music_tools_missing() or "tools present")
def test_music_script_renders_one_clip(tmp_path):
    proc = subprocess.run([sys.executable, str(MUSIC_SCRIPT), "--output", str(tmp_path), "--clips",
                           "fife_march_drums"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=SCRIPT_ENV)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["fife_march_drums.wav"]
    check_music_clip(tmp_path / "fife_march_drums.wav")
    assert "fife_march_drums.wav" in proc.stdout and "1 clips" in proc.stdout


def test_music_script_fails_clearly_without_fluidsynth(tmp_path, monkeypatch, capsys):
    script = load_script(MUSIC_SCRIPT, monkeypatch)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    assert script.main(["--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "fluidsynth" in err and "apt-get install fluidsynth fluid-soundfont-gm" in err
    assert not (tmp_path / "out").exists()


def test_midi_file_of_one_note(monkeypatch):
    script = load_script(MUSIC_SCRIPT, monkeypatch)
    assert [script._varlen(n) for n in (0, 0x7F, 0x80, 0x3FFF)] == [b"\x00", b"\x7f", b"\x81\x00", b"\xff\x7f"]
    midi = script.midi_bytes([(0.0, 0.5, 0, 60, 100)], (24,))
    assert midi[:14] == b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0"  # format 0, one track, 480 per quarter
    track = midi[22:]
    assert len(track) == int.from_bytes(midi[18:22], "big")
    # tempo 500,000 us per quarter: 960 ticks per second, so the note-off comes 480 ticks (0x83 0x60) later
    assert track == (b"\x00\xff\x51\x03\x07\xa1\x20" b"\x00\xc0\x18" b"\x00\x90\x3c\x64" b"\x83\x60\x80\x3c\x00"
                     b"\x00\xff\x2f\x00")
