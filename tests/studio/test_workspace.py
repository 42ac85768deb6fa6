"""The app's workspace (studio.workspace): hints that name its real folders, the default example per
model preset; and studio.datasets.example_indices, which picks a store's example clips."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_helpers import make_workspace
from conftest import ROOT, SR, TINY, tone, write_wav

from preprocessing.store import Store, build_store
from studio import workspace as workspace_module
from studio.datasets import example_indices
from studio.workspace import Workspace
from vae.checkpoint import CheckpointError
from vae.latents import LatentStatsError

EXAMPLES = ROOT / "examples"

# ---------------------------------------------------------------------------- missing(): hints


def _model_note(ws: Workspace) -> str:
    notes = [n for n in ws.missing() if "No trained model" in n]
    assert len(notes) == 1
    return notes[0]


def test_hints_name_the_folders_of_a_custom_data_dir(tmp_path):
    ws = Workspace.at(tmp_path / "elsewhere", tmp_path)
    note = _model_note(ws)
    store, run = ws.stores_dir / "digits", ws.runs_dir / "digits"
    assert store == tmp_path / "elsewhere" / "stores" / "digits" and run == tmp_path / "elsewhere" / "runs" / "digits"
    assert (f"`sound-vae preprocess --preset digits --input <folder> --output {store}` then "
            f"`sound-vae train --data {store} --output {run}`") in note
    assert "data/stores" not in note and " runs/" not in note and "`runs/" not in note
    assert "python -m vae" not in note
    store_note = next(n for n in ws.missing() if "No dataset store" in n)
    assert f"`{ws.stores_dir}/`" in store_note


def test_hints_name_data_stores_only_when_that_is_the_folder(tmp_path):
    ws = Workspace.at(None, tmp_path)
    note = _model_note(ws)
    assert ws.stores_dir == tmp_path / "data" / "stores" and ws.runs_dir == tmp_path / "runs"
    assert f"--output {tmp_path / 'data' / 'stores' / 'digits'}`" in note
    assert f"--output {tmp_path / 'runs' / 'digits'}`" in note


def test_hints_quote_folders_with_spaces(tmp_path):
    ws = Workspace.at(tmp_path / "my data", tmp_path)
    note = _model_note(ws)
    quoted = shlex.quote(str(ws.stores_dir / "digits"))
    assert quoted.startswith("'") and f"--data {quoted} --output {shlex.quote(str(ws.runs_dir / 'digits'))}`" in note


def test_no_model_hint_when_a_run_exists(tmp_path, trained):
    ws = Workspace.at(tmp_path / "d", tmp_path)
    shutil.copytree(trained[0], ws.runs_dir / "r1")
    assert not any("No trained model" in n for n in ws.missing())


# ---------------------------------------------------------------------------- default_example


def _config(preset: str) -> dict:
    path = ROOT / "checkpoints" / preset / "config.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this copy")
    return json.loads(path.read_text())


def _checkpoint(folder: Path, preset: str, **spectrogram) -> str:
    """A checkpoint folder holding only a config.json: the shipped ``preset``'s, with ``spectrogram`` changed."""
    config = _config(preset)
    config["spectrogram"].update(spectrogram)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Workspace:
    """A workspace on the repository's examples/; loading weights fails (default_example must not need them)."""
    if not (EXAMPLES / "digits").is_dir() or not (EXAMPLES / "music").is_dir():
        pytest.skip("examples/digits or examples/music is not in this copy")

    def no_weights(*args, **kwargs):
        raise AssertionError("default_example loaded a checkpoint")

    monkeypatch.setattr(workspace_module, "load_checkpoint", no_weights)
    return Workspace(tmp_path / "data", tmp_path / "runs", tmp_path / "checkpoints", EXAMPLES)


def _folder(example: str | None) -> str:
    assert example is not None
    return Path(example).relative_to(EXAMPLES).parts[0]


@pytest.mark.parametrize(("name", "preset", "expected"), [
    ("jazz", "music", "music"),        # no example named jazz: the music preset's sample rate
    ("music2", "music", "music"),
    ("speech", "digits", "digits"),
    ("music", "music", "music"),       # the folder name, as for the shipped checkpoints
    ("digits", "digits", "digits"),
])
def test_default_example_follows_the_checkpoint_preset(ws, tmp_path, name, preset, expected):
    ck = _checkpoint(tmp_path / "runs" / name, preset)
    assert not (Path(ck) / "model.safetensors").exists()
    example = ws.default_example(ck)
    assert _folder(example) == expected
    assert Path(example).is_file()


def test_default_example_prefers_a_clip_named_after_the_checkpoint(ws, tmp_path):
    # A run called "digits" trained with music parameters: its name matches example paths first.
    assert _folder(ws.default_example(_checkpoint(tmp_path / "digits", "music"))) == "digits"
    # A name that is in one clip's file name picks that clip.
    assert ws.default_example(_checkpoint(tmp_path / "joplin", "digits")).endswith("music/joplin_rag_piano.wav")


def test_default_example_matches_the_sample_rate_not_other_parameters(ws, tmp_path):
    ck = _checkpoint(tmp_path / "wide", "digits", n_fft=1024, hop_length=256, duration=2.0)
    assert _folder(ws.default_example(ck)) == "digits"  # 8 kHz: the digits preset
    ck = _checkpoint(tmp_path / "short", "music", duration=0.5, windowing="first")
    assert _folder(ws.default_example(ck)) == "music"  # 22,050 Hz: the music preset


def test_default_example_falls_back_to_the_first_clip(ws, tmp_path):
    first = ws.examples()[0][1]
    assert ws.default_example(_checkpoint(tmp_path / "other", "music", sample_rate=16000)) == first
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    assert ws.default_example(str(broken)) == first
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    assert ws.default_example(str(tmp_path / "binary")) == first
    assert ws.default_example(str(tmp_path / "absent")) == first
    assert ws.default_example(None) == first


def test_default_example_when_an_app_preset_has_no_clips(tmp_path, fsdd_dir):
    ws = make_workspace(tmp_path, fsdd_dir)  # examples/digits only
    ck = _checkpoint(tmp_path / "runs" / "jazz", "music")
    assert ws.default_example(ck) == ws.examples()[0][1]


# ---------------------------------------------------------------------------- example_indices

LONG = TINY.replace(windowing="all")


def _long_files_store(tmp_path: Path) -> Store:
    """Three 1 s files in one folder (no labels): 4 windows each, one file in the test split."""
    for k, freq in enumerate((300, 700, 1500)):
        write_wav(tmp_path / "in" / f"track{k}.wav", tone(freq, dur=1.0) + tone(3 * freq, dur=1.0, amp=0.1))
    build_store(tmp_path / "in", tmp_path / "store", LONG)
    return Store(tmp_path / "store")


def test_examples_cover_every_file_of_an_unlabelled_store(tmp_path):
    store = _long_files_store(tmp_path)
    sources = {c["source"] for c in store.clips}
    assert sources == {"track0.wav", "track1.wav", "track2.wav"} and len(store) == 12
    assert {c["label"] for c in store.clips} == {None}
    assert len({c["source"] for c in store.clips if c["split"] == "test"}) == 1
    for seed in range(5):
        idx = example_indices(store, 4, seed)
        assert len(idx) == 4 and len(set(idx)) == 4
        assert {store.clips[i]["source"] for i in idx[:3]} == sources  # every file before a second from one
        assert store.clips[idx[0]]["split"] == "test"  # the test split first among unused files
    assert example_indices(store, 4, 3) == example_indices(store, 4, 3)  # deterministic for a seed
    assert len(set(example_indices(store, 20))) == 12  # never more than the store holds, never twice


def _labelled_store(tmp_path: Path, test_fraction: float) -> Store:
    """Labels a, b, c (class folders), three 0.6 s files each (two windows per file)."""
    for k, label in enumerate("abc"):
        for j in range(3):
            wave = tone(200 + 300 * k + 40 * j, dur=0.6) + tone(2000 - 100 * j, dur=0.6, amp=0.1)
            write_wav(tmp_path / "in" / label / f"{label}{j}.wav", wave)
    out = tmp_path / f"store-{test_fraction}"
    build_store(tmp_path / "in", out, LONG, test_fraction=test_fraction)
    return Store(out)


@pytest.mark.parametrize("test_fraction", [0.1, 0.5])
def test_examples_take_one_per_label_first(tmp_path, test_fraction):
    store = _labelled_store(tmp_path, test_fraction)
    assert store.labels() == ["a", "b", "c"] and len({c["source"] for c in store.clips}) == 9
    test_labels = {store.clips[i]["label"] for i in store.indices("test")}
    for seed in range(5):
        idx = example_indices(store, 4, seed)
        assert len(set(idx)) == 4
        assert [store.clips[i]["label"] for i in idx[:3]] == ["a", "b", "c"]
        assert len({store.clips[i]["source"] for i in idx}) == 4  # four different files
        for i in idx[:3]:  # a label's example comes from its test files when it has any
            assert (store.clips[i]["split"] == "test") == (store.clips[i]["label"] in test_labels)
    assert example_indices(store, 4, 7) == example_indices(store, 4, 7)


def test_examples_of_the_fsdd_like_store_stay_in_the_test_split(tiny_store):
    idx = example_indices(tiny_store, 6, seed=1)
    assert all(tiny_store.clips[i]["split"] == "test" for i in idx)
    assert len({tiny_store.clips[i]["source"] for i in idx}) == 6
    assert np.array_equal(idx, example_indices(tiny_store, 6, seed=1))
    assert SR == tiny_store.config.sample_rate


# ---------------------------------------------------------------------------- broken runs and stores (#12, defect 1)


def _broken_runs(ws: Workspace, trained_dir: Path) -> None:
    """Runs whose config.json is not UTF-8, or has a ``meta`` that is not an object; a store whose config
    is not UTF-8."""
    for name in ("binary", "meta5"):
        (ws.runs_dir / name).mkdir(parents=True)
        shutil.copyfile(trained_dir / "model.safetensors", ws.runs_dir / name / "model.safetensors")
    (ws.runs_dir / "binary" / "config.json").write_bytes(b"\xff\xfe")
    config = json.loads((trained_dir / "config.json").read_text())
    (ws.runs_dir / "meta5" / "config.json").write_text(json.dumps({**config, "meta": 5}))
    junk = ws.stores_dir / "junk"
    junk.mkdir(parents=True)
    (junk / "config.json").write_bytes(b"\xff\xfe")
    (junk / "manifest.json").write_text("[]")


def test_broken_runs_and_stores_are_listed_as_broken_with_their_reason(tmp_path, trained):
    ws = make_workspace(tmp_path, trained_dir=trained[0])
    _broken_runs(ws, trained[0])
    labels = dict((path, name) for name, path in ws.checkpoints())
    assert labels[str(ws.runs_dir / "binary")].startswith("binary (trained here; broken: config.json is not valid JSON")
    assert labels[str(ws.runs_dir / "meta5")] == (
        "meta5 (trained here; broken: config.json: 'meta' must be an object, got int)")
    assert labels[str(ws.checkpoints_dir / "digits")] == "digits (shipped)"
    assert ws.stores() == [("junk (broken: config.json is damaged ('utf-8' codec can't decode byte 0xff in "
                            "position 0: invalid start byte))", str(ws.stores_dir / "junk"))]


def test_the_app_starts_with_broken_runs_and_stores(tmp_path, trained):
    from app import create_app

    ws = make_workspace(tmp_path, trained_dir=trained[0])
    _broken_runs(ws, trained[0])
    app = create_app(ws)[1]
    names = [c[0] for c in app.reconstruct.ckpt.choices]
    assert any(n.startswith("meta5 (trained here; broken:") for n in names)
    with pytest.raises(CheckpointError, match="'meta' must be an object"):
        ws.load(ws.runs_dir / "meta5")


# ---------------------------------------------------------------------- damaged latent statistics (#12, defect 10)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_damaged_latent_stats_do_not_block_reconstruct_and_explore_says_why(tmp_path, fsdd_dir, trained, damage):
    from safetensors.torch import load_file, save_file

    from app import create_app

    ws = make_workspace(tmp_path, fsdd_dir, trained[0])
    ck = str(ws.checkpoints_dir / "digits")
    latents = Path(ck) / "latents.safetensors"
    if damage == "garbage":
        latents.write_bytes(b"\x00" * 64)
    elif damage == "truncated":
        latents.write_bytes(latents.read_bytes()[:200])
    else:
        t = load_file(str(latents))
        save_file({**t, "mean": t["mean"][:-1]}, str(latents))
    app = create_app(ws)[1]
    rec, ex = app.reconstruct, app.explore
    out = rec.reconstruct(ck, "example", ws.examples()[0][1], None, None, None, "zero", 1)
    assert Path(out[rec.recon_aud]).is_file()
    with pytest.raises(LatentStatsError, match=f"{latents} (is damaged|does not fit).*delete it"):
        ws.latent_stats(ck)
    info = ex.setup(ck, "zero", 1)[ex.info]
    assert "The latent statistics cannot be used" in info and "prior's first axes" in info


def test_old_output_folders_are_removed_beyond_the_newest_ones(tmp_path):
    ws = Workspace(tmp_path / "data", tmp_path / "runs", tmp_path / "ck", tmp_path / "ex")
    folders = []
    for k in range(5):
        d = ws.audio_dir / f"f{k}"
        d.mkdir(parents=True)
        (d / "a.wav").write_bytes(b"x")
        if k == 1:  # something unexpected inside: still removed
            (d / "sub").mkdir()
            (d / "sub" / "b").write_bytes(b"y")
        folders.append(ws._track(d, keep=2))
    assert [d.exists() for d in folders] == [False, False, False, True, True]
    assert sorted(p.name for p in ws.audio_dir.iterdir()) == ["f3", "f4"]
