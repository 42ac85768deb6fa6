"""scripts/make_music_corpus.py: a tiny corpus (2 styles x 1 short file) rendered with FluidSynth from music21."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import music_tools_missing

from preprocessing.config import PRESETS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SCRIPT = SCRIPTS / "make_music_corpus.py"
TINY = ["--styles", "chorale", "march", "--minutes-per-style", "0.05", "--max-seconds-per-file", "4"]
CAP_S = 4.0
# The script imports the package: installed (make test) or, as here, from the repository root.
SCRIPT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


needs_tools = pytest.mark.skipif(bool(music_tools_missing()), reason=music_tools_missing() or "tools present")


@pytest.fixture(scope="module")
def script():
    """The script as a module; its folder on sys.path, as when it runs, for its sibling make_music_examples."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SCRIPTS))
        spec = importlib.util.spec_from_file_location(SCRIPT.stem, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, SCRIPT.stem, module)  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module


def run_main(script, argv: list[str], capsys) -> tuple[int, str, str, float]:
    started = time.monotonic()
    rc = script.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err, time.monotonic() - started


@pytest.fixture(scope="module")
def tiny(script, tmp_path_factory):
    """A tiny corpus rendered once: (folder, stdout)."""
    if music_tools_missing():
        pytest.skip(music_tools_missing())
    out = tmp_path_factory.mktemp("corpus") / "music21"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = script.main([*TINY, "--output", str(out)])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


def row(stdout: str, name: str) -> list[str]:
    """The summary's row for ``name``: name, files, minutes, new, skipped."""
    return next(line.split() for line in stdout.splitlines() if line.split()[:1] == [name])


def wavs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.wav"))


@needs_tools
def test_tiny_corpus_has_the_gtzan_layout_and_the_music_format(script, tiny):
    out, stdout = tiny
    assert script.SAMPLE_RATE == PRESETS["music"].sample_rate == 22050
    assert sorted(p.name for p in out.iterdir()) == ["chorale", "corpus.json", "march"]
    files = wavs(out)
    assert [p.parent.name for p in files] == ["chorale", "march"]
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (22050, 1, "PCM_16", "WAV"), path
        wave, sr = sf.read(str(path), dtype="float64")
        assert 1.0 <= len(wave) / sr <= CAP_S, f"{path.name}: {len(wave) / sr:.2f} s"
        assert 0.85 <= np.abs(wave).max() <= 0.95, f"{path.name}: peak {np.abs(wave).max():.3f}"
        assert 10 * np.log10(np.mean(wave**2)) > -30, f"{path.name} is nearly silent"
        edge = int(0.05 * sr)  # trimmed: sound within 50 ms of both ends
        assert np.abs(wave[:edge]).max() > 1e-3 and np.abs(wave[-edge:]).max() > 1e-4, path.name
    assert not list(out.rglob("*.part"))
    assert [row(stdout, name)[1:] for name in ("chorale", "march", "all")] == [
        ["1", "0.1", "1", "0"], ["1", "0.1", "1", "0"], ["2", "0.1", "2", "0"]], stdout


@needs_tools
def test_corpus_json_lists_each_file_with_its_source_and_settings(tiny):
    from music21 import common

    out, _ = tiny
    data = json.loads((out / "corpus.json").read_text())
    assert data["sample_rate"] == 22050 and data["skipped"] == []
    assert data["last_run"] | {"styles": None} == {"styles": None, "minutes_per_style": 0.05,
                                                   "max_seconds_per_file": CAP_S, "seed": 0}
    entries = {e["file"]: e for e in data["files"]}
    assert sorted(entries) == [p.relative_to(out).as_posix() for p in wavs(out)]
    for name, e in entries.items():
        assert (Path(common.getCorpusFilePath()) / e["source"]).is_file(), e["source"]
        assert name.startswith(e["style"] + "/") and e["max_seconds"] == CAP_S
        assert len(e["programs"]) == e["parts"] >= 1 and all(0 <= p <= 127 for p in e["programs"])
        assert 0.9 <= e["tempo_factor"] <= 1.1 and e["licence"] and e["ensemble"]
        wave, sr = sf.read(str(out / name))
        assert e["seconds"] == pytest.approx(len(wave) / sr, abs=1e-3) and e["bytes"] == (out / name).stat().st_size
    march = next(e for e in entries.values() if e["style"] == "march")
    assert march["drums"] == "march" and march["source"] == "miscFolk/americanfifeopus.abc" and march["number"] < 100
    chorale = next(e for e in entries.values() if e["style"] == "chorale")
    assert chorale["source"].startswith("bach/bwv") and chorale["parts"] == 4


@needs_tools
def test_a_second_run_renders_nothing_new_and_is_fast(script, tiny, monkeypatch, capsys):
    out, _ = tiny
    before = {p: p.stat().st_mtime_ns for p in [*wavs(out), out / "corpus.json"]}

    def must_not_render(piece):
        raise AssertionError(f"{piece.file} was rendered again")

    monkeypatch.setattr(script, "render_piece", must_not_render)
    rc, stdout, _, seconds = run_main(script, [*TINY, "--output", str(out)], capsys)
    assert rc == 0 and row(stdout, "all") == ["all", "2", "0.1", "0", "0"], stdout
    assert {p: p.stat().st_mtime_ns for p in before if p.suffix == ".wav"} == {
        p: t for p, t in before.items() if p.suffix == ".wav"}
    assert seconds < 20, f"a run with nothing to render took {seconds:.1f} s"


@needs_tools
def test_same_seed_same_bytes_in_worker_processes(tiny, tmp_path):
    """The command line with --jobs 2 (spawned workers) writes the very same march file as the first run, and
    running it again renders nothing and takes seconds."""
    out, _ = tiny
    again = tmp_path / "again"
    command = [sys.executable, str(SCRIPT), "--styles", "march", *TINY[3:], "--jobs", "2", "--output", str(again)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=SCRIPT_ENV)
    assert proc.returncode == 0, proc.stderr
    [first] = [p for p in wavs(out) if p.parent.name == "march"]
    [second] = wavs(again)
    assert second.relative_to(again) == first.relative_to(out)
    assert second.read_bytes() == first.read_bytes()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=SCRIPT_ENV)
    assert proc.returncode == 0 and row(proc.stdout, "all") == ["all", "1", "0.1", "0", "0"], proc.stdout
    assert int(proc.stdout.rsplit("this run took ", 1)[1].split()[0]) <= 5, proc.stdout  # not counting imports


@needs_tools
def test_a_score_that_fails_is_skipped_with_its_name(script, tmp_path, monkeypatch, capsys):
    load, calls = script.render.load_score, []

    def first_fails(clip):
        calls.append(clip.work)
        if len(calls) == 1:
            raise ValueError("cannot read this score\nsecond line")
        return load(clip)

    monkeypatch.setattr(script.render, "load_score", first_fails)
    rc, stdout, _, _ = run_main(script, ["--styles", "march", *TINY[3:], "--output", str(tmp_path)], capsys)
    assert rc == 0 and len(calls) == 2
    line = next(x for x in stdout.splitlines() if x.startswith("skip"))
    assert line.startswith(f"skip {calls[0]} (tune ") and line.endswith(": ValueError: cannot read this score")
    data = json.loads((tmp_path / "corpus.json").read_text())
    assert [s["reason"] for s in data["skipped"]] == ["ValueError: cannot read this score"]
    assert len(data["files"]) == 1 and len(wavs(tmp_path)) == 1
    monkeypatch.setattr(script.render, "load_score", load)  # a re-run remembers the failure and tries no more
    rc, stdout, _, _ = run_main(script, ["--styles", "march", *TINY[3:], "--output", str(tmp_path)], capsys)
    assert rc == 0 and "(as in an earlier run)" in stdout and row(stdout, "march")[1:] == ["1", "0.1", "0", "1"]


@pytest.mark.parametrize("bad, message", [
    (["--minutes-per-style", "0"], "must be from 0.01 to 600 minutes, not 0"),
    (["--minutes-per-style", "1e9"], "must be from 0.01 to 600 minutes"),
    (["--minutes-per-style", "nan"], "must be from 0.01 to 600 minutes"),
    (["--max-seconds-per-file", "0.5"], "must be from 1 to 600 seconds"),
    (["--jobs", "0"], "must be from 1 to 32 processes"),
    (["--jobs", "1000"], "must be from 1 to 32 processes"),
    (["--seed", "-1"], "must be from 0 to"),
    (["--minutes-per-style", "ten"], "'ten' is not a number"),
    (["--styles", "jazz"], "invalid choice: 'jazz'"),
])
def test_a_bad_argument_is_refused_before_any_work(script, tmp_path, monkeypatch, capsys, bad, message):
    monkeypatch.setattr(script.render, "find_tools", lambda: pytest.fail("work started"))
    with pytest.raises(SystemExit) as exc:
        script.main([*bad, "--output", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert bad[0] in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_tools_or_disk_space_fail_clearly(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script.render.shutil, "which", lambda name: None)
    assert script.main(["--output", str(tmp_path / "out")]) == 1
    assert "apt-get install fluidsynth fluid-soundfont-gm" in capsys.readouterr().err
    monkeypatch.undo()
    if music_tools_missing():
        return
    monkeypatch.setattr(script.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10**6))
    assert script.main(["--output", str(tmp_path / "out")]) == 1
    assert "the corpus takes up to 175 MB" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_programs_spread_from_the_top_part_to_the_bass(script):
    assert script.spread((56, 60, 57, 58), 4) == (56, 60, 57, 58)
    assert script.spread((40, 41, 42), 5) == (40, 40, 41, 42, 42)
    assert script.spread((19,), 3) == (19, 19, 19)
    assert script.spread((73, 68, 71, 70), 1) == (73,)
    assert script.spread((73, 68, 71, 70), 2) == (73, 70)


def test_trim_and_file_names(script):
    wave = np.concatenate([np.zeros(10), [0.5, -1.0, 1e-4, 0.2], np.full(5, 1e-4)])
    assert script.trim(wave).tolist() == [0.5, -1.0, 1e-4, 0.2]
    assert len(script.trim(np.zeros(5))) == 0
    assert script.file_name("folk", "oneills1850/0001-0050.abc", 7) == "folk/oneills1850_0001-0050_tune7.wav"
    assert script.file_name("piano", "beach/prayer of a child.musicxml", None) == "piano/beach_prayer_of_a_child.wav"


@needs_tools
def test_every_style_has_works_and_its_choices_are_seeded(script):
    for style in script.STYLES:
        works = script.works_of(style)
        assert len(works) >= 15, style.name
        assert not [w for w, _ in works if w.startswith(("essenFolksong", "palestrina", "josquin", "monteverdi/"
                                                           "madrigal.5"))]
        pieces = script.plan(style, 0, 60.0)
        assert pieces == script.plan(style, 0, 60.0) and pieces != script.plan(style, 1, 60.0)
        assert len({p.file for p in pieces}) == len(pieces)
    assert all(n is not None and n < 100 for _, n in script.works_of(script.BY_NAME["march"]))
