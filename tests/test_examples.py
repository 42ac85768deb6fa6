"""The shipped example clips (examples/digits) and the script that makes them."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from preprocessing.labels import FSDD_NAME

ROOT = Path(__file__).resolve().parents[1]
DIGITS_DIR = ROOT / "examples" / "digits"
SCRIPT = ROOT / "scripts" / "make_examples.py"


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
                           "--voices", "espeakf"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["7_espeakf_0.wav"]
    check_clip(tmp_path / "7_espeakf_0.wav")
    assert "7_espeakf_0.wav" in proc.stdout and "1 clips" in proc.stdout


def test_script_fails_clearly_without_espeak(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("make_examples", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_examples", script)  # dataclasses look their module up
    spec.loader.exec_module(script)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    assert script.main(["--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "espeak-ng was not found on PATH" in err and "apt-get install espeak-ng" in err
    assert not (tmp_path / "out").exists()
