"""Library code behind the app callbacks: named stores, the workspace, clip sources, comparison,
and the callbacks that the HTTP tests cannot reach (map picking, error wrapping, FSDD download)."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from app_helpers import assert_same_sound, make_workspace, read_audio, slider_code, spy_render
from conftest import TINY, digit_sound, write_wav
from PIL import Image

from preprocessing import download
from preprocessing.audio import AudioError
from preprocessing.config import ConfigError
from preprocessing.download import DownloadError
from preprocessing.errors import InputError
from preprocessing.spectrogram import to_audio
from preprocessing.store import PreprocessError, Store, clip_audio, clip_db
from studio import clips
from studio.datasets import (
    build_named_store,
    check_name,
    clip_choices,
    example_indices,
    list_stores,
    preset_fields,
    spectrogram_config,
    summary_tables,
)
from studio.latent_space import slider_specs
from studio.wording import metrics_markdown
from studio.workspace import Workspace
from vae import metrics
from vae.checkpoint import CheckpointError
from vae.evaluate import compare, joined_db
from vae.generate import reconstruct_audio, to_wave
from vae.latents import MAX_SLIDERS, load_latent_stats, to_sliders

# ---------------------------------------------------------------------------- studio.datasets


@pytest.mark.parametrize("name", ["digits", "a.b-c_1", "9"])
def test_check_name_accepts(name):
    assert check_name(f" {name} ") == name


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", ".hidden", "x" * 65, "a b"])
def test_check_name_refuses(name):
    with pytest.raises(ConfigError, match="not allowed"):
        check_name(name)


def test_spectrogram_config_from_form():
    cfg = spectrogram_config("music", 16000, 1.0, 512.0, 128, "clip", "first")
    assert (cfg.sample_rate, cfg.duration, cfg.n_fft, cfg.hop_length) == (16000, 1.0, 512, 128)
    assert (cfg.normalisation, cfg.windowing) == ("clip", "first")
    assert spectrogram_config("digits") == spectrogram_config("digits", **{k: None for k in preset_fields("digits")})
    for args, msg in [(("nope",), "unknown preset"), (("digits", 8000.5), "whole number"),
                      (("digits", None, None, 64, 128), "hop_length"),
                      (("digits", None, None, None, None, "x"), "norm"),
                      (("digits", None, None, None, None, None, "x"), "windowing")]:
        with pytest.raises(ConfigError, match=msg):
            spectrogram_config(*args)


def test_build_named_store_from_folder_and_uploads(tmp_path, fsdd_dir):
    summary, refused = build_named_store(tmp_path / "stores", "f", TINY, folder=fsdd_dir)
    assert summary.n_clips == 36 and refused == []
    files = [fsdd_dir / "0_alice_0.wav", fsdd_dir / "1_bob_6.wav"]
    txt = tmp_path / "x.txt"
    txt.write_text("x")
    summary, refused = build_named_store(tmp_path / "stores", "u", TINY, uploads=[*files, txt],
                                         uploads_dir=tmp_path / "uploads")
    assert summary.n_clips == 2 and refused == [("x.txt", "not an audio file or zip (.txt)")]
    assert (tmp_path / "uploads" / "u" / "0_alice_0.wav").is_file()
    assert [p.name for p in list_stores(tmp_path / "stores")] == ["f", "u"]
    assert list_stores(tmp_path / "nothing") == []


def test_build_named_store_from_a_folder_of_symlinks(tmp_path, fsdd_dir):
    links = tmp_path / "links"
    links.mkdir()
    for f in sorted(fsdd_dir.glob("*.wav"))[:6]:
        (links / f.name).symlink_to(f)
    summary, _ = build_named_store(tmp_path / "stores", "l", TINY, folder=links)
    assert summary.n_clips == 6
    store = Store(tmp_path / "stores" / "l")
    assert store.clips[0]["source"] == sorted(p.name for p in links.iterdir())[0]
    assert clip_audio(store, 0)[2]  # playable from its source (the link)


def test_build_named_store_errors(tmp_path, fsdd_dir):
    for kw, msg in [({"folder": tmp_path / "nope"}, "does not exist"), ({}, "choose a source"),
                    ({"folder": fsdd_dir / "0_alice_0.wav"}, "not a folder")]:
        with pytest.raises(PreprocessError, match=msg):
            build_named_store(tmp_path, "s", TINY, **kw)
    with pytest.raises(ConfigError, match="not allowed"):
        build_named_store(tmp_path, "../s", TINY, folder=fsdd_dir)


def test_summary_tables(tiny_store):
    s = tiny_store.summary()
    head, rows, skipped = summary_tables(s, [("a.zip:x.txt", "not audio")])
    assert "36 clips" in head and "1 files skipped" in head
    assert rows[-1] == ["all", 24, 12, 36] and rows[0] == ["0", 8, 4, 12]
    assert skipped == [["a.zip:x.txt", "not audio"]]


def test_examples_clip_audio_and_choices(tiny_store, tmp_path):
    idx = example_indices(tiny_store, 4)
    assert len(idx) == 4 and len(set(idx)) == 4
    assert {tiny_store.clips[i]["label"] for i in idx[:3]} == {"0", "1", "2"}
    assert all(tiny_store.clips[i]["split"] == "test" for i in idx)
    db, lo, hi = clip_db(tiny_store, idx[0])
    assert db.shape == TINY.shape and lo <= db.min() and db.max() <= hi + 1e-4
    wave, sr, from_source = clip_audio(tiny_store, idx[0])
    assert wave.shape == (TINY.n_samples,) and sr == TINY.sample_rate and from_source
    assert np.abs(wave).max() == pytest.approx(1.0, abs=0.05)  # peak-normalised as analysed
    with pytest.raises(PreprocessError, match=r"^clip 36 does not exist: the store has 36 clips \(0\.\.35\)$"):
        clip_audio(tiny_store, len(tiny_store))
    choices = clip_choices(tiny_store, limit=5)
    assert len(choices) == 5 and "(test)" in choices[0][0] and isinstance(choices[0][1], int)


def test_clip_audio_falls_back_to_the_spectrogram(tiny_store, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_store.path, copy)
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text().replace(str(tiny_store.meta["input"]), "/gone/away"))
    torch.manual_seed(0)  # Griffin-Lim starts from random phase
    wave, _, from_source = clip_audio(Store(copy), 0, n_iter=2)
    assert not from_source and wave.shape == (TINY.n_samples,)
    # the stored spectrogram (in its dB range) through Griffin-Lim
    torch.manual_seed(0)
    expected = to_audio(torch.from_numpy(clip_db(tiny_store, 0)[0]), TINY, phase="griffinlim", n_iter=2)
    np.testing.assert_array_equal(wave, expected.numpy())


# ---------------------------------------------------------------------------- studio.workspace


def test_workspace_lists_and_defaults(tmp_path, fsdd_dir, trained):
    ws = make_workspace(tmp_path, fsdd_dir, trained[0])
    assert ws.default_checkpoint() == str(ws.checkpoints_dir / "digits")
    assert [label for label, _ in ws.checkpoints()] == ["digits (shipped)"]
    assert ws.examples()[0][0] == "digits/0_alice_0.wav"
    assert ws.default_example(ws.default_checkpoint()).endswith("0_alice_0.wav")
    assert any("No dataset store" in n for n in ws.missing())
    assert not any("No trained model" in n for n in ws.missing())
    ck = ws.load(ws.default_checkpoint())
    assert ws.load(ws.default_checkpoint()) is ck  # cached
    assert torch.equal(ws.latent_stats(ws.default_checkpoint()).codes, load_latent_stats(trained[0]).codes)
    run = ws.new_run_dir("r1")
    (run / "last").mkdir(parents=True)
    assert ws.new_run_dir("r1") == run  # nothing saved in it (a first save was killed): it can start again
    shutil.copytree(trained[0], run, dirs_exist_ok=True)  # a trained run, resumable from last/
    with pytest.raises(InputError, match="already exists"):  # a user error: pick another name
        ws.new_run_dir("r1")
    with pytest.raises(ConfigError):
        ws.new_run_dir("../x")


def test_fresh_workspace_says_what_is_missing(tmp_path):
    ws = Workspace.at(tmp_path / "data", tmp_path)
    assert ws.runs_dir == tmp_path / "data" / "runs"
    assert Workspace.at(None, tmp_path).runs_dir == tmp_path / "runs"
    assert ws.default_checkpoint() is None and ws.examples() == [] and ws.default_example(None) is None
    notes = " ".join(ws.missing())
    assert "No trained model yet" in notes and "checkpoints/digits" in notes and "Download FSDD" in notes
    with pytest.raises(CheckpointError, match="no model selected"):
        ws.load(None)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ws.load(tmp_path)


def test_workspace_wav_files(tmp_path):
    ws = Workspace.at(tmp_path / "d", tmp_path)
    path = ws.wav(np.full(800, 2.0, np.float32), 8000, "a/../b c")
    assert Path(path).name == "a_.._b_c.wav" and Path(path).parent.parent == ws.audio_dir
    import soundfile as sf

    data, sr = sf.read(path)
    assert sr == 8000 and len(data) == 800 and data.max() <= 1.0  # clipped, not wrapped
    paths = [ws.wav(np.zeros(10, np.float32), 8000, f"x{k}") for k in range(405)]
    # the newest 400 files are kept, the older ones (the first file and the 5 after it) removed
    assert len(list(ws.audio_dir.iterdir())) == 400
    assert not Path(path).exists() and not any(Path(p).exists() for p in paths[:5])
    assert all(Path(p).is_file() for p in paths[5:])


# ---------------------------------------------------------------------------- studio.clips


def test_clip_sources(tiny_store, fsdd_dir, tmp_path):
    c = clips.from_store(tiny_store, 0, 16000)
    assert c.sample_rate == 16000 and len(c.wave) == 2 * TINY.n_samples and c.name == tiny_store.clip_name(0)
    i = clips.random_index(tiny_store, seed=1)
    assert tiny_store.clips[i]["split"] == "test" and i == clips.random_index(tiny_store, seed=1)
    f = clips.from_file(fsdd_dir / "1_bob_5.wav", 8000)
    assert f.duration == pytest.approx(0.3) and f.name == "1_bob_5.wav"
    long = write_wav(tmp_path / "long.wav", np.tile(digit_sound(0, 0, 0), 20))
    assert clips.from_file(long, 8000, max_seconds=1.0).note == "cut to the first 1 s"
    with pytest.raises(AudioError, match=r"^no audio given: upload a file"):  # no "(no file):" prefix
        clips.from_file(None, 8000)
    rec = clips.from_array(16000, (np.ones((1600, 2)) * 16384).astype(np.int16), 8000)
    assert len(rec.wave) == 800 and np.median(rec.wave) == pytest.approx(0.5, abs=0.01)
    with pytest.raises(AudioError, match="empty"):
        clips.from_array(8000, np.zeros(0), 8000)
    with pytest.raises(AudioError, match="NaN"):
        clips.from_array(8000, np.array([np.nan, 0.0]), 8000)


# ---------------------------------------------------------------------------- vae.evaluate.compare


def test_compare_shares_the_colour_scale_and_measures(tiny_ckpt):
    wave = np.concatenate([digit_sound(1, 0, 0), digit_sound(0, 1, 0)])  # 0.6 s: three windows
    c = compare(tiny_ckpt, wave, TINY.sample_rate, "griffinlim", 2)
    assert len(c.original) == len(c.reconstruction) == len(c.phase_only) == len(wave)
    assert c.n_windows == 3 and c.n_iter == 2
    assert c.original_db.shape == c.reconstruction_db.shape == (TINY.n_freq, c.n_windows * TINY.n_frames)
    assert c.vmin == pytest.approx(30.0 - TINY.top_db) and c.vmax == pytest.approx(30.0)
    assert c.lsd_db > 0 and c.spectral_convergence > 0 and c.phase_only_lsd_db > 0
    assert c.phase_only_lsd_db < c.lsd_db  # an untrained model is worse than phase recovery alone
    assert "log-spectral distance" in metrics_markdown(c) and "2 Griffin-Lim" in metrics_markdown(c)
    assert compare(tiny_ckpt, wave, TINY.sample_rate, "griffinlim").n_iter == TINY.griffinlim_iters  # the default


def test_compare_is_the_library_reconstruction_and_its_metrics(tiny_ckpt):
    """Zero phase (deterministic): every figure and sound is what vae.generate and vae.metrics give."""
    wave = np.concatenate([digit_sound(1, 0, 0), digit_sound(0, 1, 0)])
    sr = TINY.sample_rate
    z = compare(tiny_ckpt, wave, sr, "zero")
    recon, a, x_hat = reconstruct_audio(tiny_ckpt, wave, "zero")
    phase_only = to_wave(tiny_ckpt, a.specs, a.ranges, "zero")[: len(wave)] / a.gain
    np.testing.assert_array_equal(z.original, wave)
    np.testing.assert_array_equal(z.reconstruction, recon)
    np.testing.assert_allclose(z.phase_only, phase_only, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(z.original_db, joined_db(a.specs, a.ranges))
    np.testing.assert_array_equal(z.reconstruction_db, joined_db(x_hat, a.ranges))
    assert z.lsd_db == metrics.log_spectral_distance(wave, recon, sr)
    assert z.spectral_convergence == metrics.spectral_convergence(wave, recon, sr)
    assert z.phase_only_lsd_db == pytest.approx(metrics.log_spectral_distance(wave, phase_only, sr), abs=1e-6)
    assert z.phase_only_sc == pytest.approx(metrics.spectral_convergence(wave, phase_only, sr), abs=1e-7)
    assert z.n_iter is None and "zero phase" in metrics_markdown(z)
    # the table shows those figures, each in its row
    rows = metrics_markdown(z).split("\n")
    assert f"| {z.lsd_db:.2f} | {z.spectral_convergence:.3f} |" in next(r for r in rows if "VAE" in r)
    assert f"| {z.phase_only_lsd_db:.2f} | {z.phase_only_sc:.3f} |" in next(r for r in rows if "phase method only" in r)


def test_compare_errors(tiny_ckpt):
    ok = digit_sound(0, 0, 0)
    for wave, sr, kw, msg in [(ok, 16000, {}, "Hz"), (ok, 8000, {"phase": "x"}, "unknown phase"),
                              (ok, 8000, {"n_iter": 0}, "at least 1"), (ok[:10], 8000, {}, "shorter")]:
        with pytest.raises(ValueError, match=msg):
            compare(tiny_ckpt, wave, sr, **kw)


# ---------------------------------------------------------------------------- app callbacks


@pytest.fixture(scope="module")
def studio(tmp_path_factory, fsdd_dir, trained):
    from app import create_app

    ws = make_workspace(tmp_path_factory.mktemp("studio"), fsdd_dir, trained[0])
    return create_app(ws)[1]


def test_friendly_turns_errors_into_messages(caplog):
    """A user error shows its message; anything else (even a ValueError) is a bug: a generic message
    on the page, the traceback in the server log."""
    from studio.ui import friendly

    def user():
        raise ConfigError("bad parameter")

    def bug():
        raise KeyError("x")

    def value_bug():
        raise ValueError("an internal check failed")

    with pytest.raises(gr.Error, match="bad parameter"):
        friendly(user)()
    for fn in (bug, value_bug):
        with pytest.raises(gr.Error) as e:
            friendly(fn)()
        assert str(e.value.message).startswith("Something went wrong on the server (a bug, not your input)")
        assert "KeyError" not in e.value.message and "internal check" not in e.value.message
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [KeyError, ValueError]


def test_pick_on_map_loads_the_clicked_clip(studio):
    ex = studio.explore
    ck = studio.initial_checkpoint
    state = ex.draw_map(ck, "")[ex.map_state]
    m, geom = state["map"], state["axes"]
    px, py = geom.to_pixels(m.xy)[4]
    out = ex.pick_on_map(ck, state, "griffinlim", 2, gr.SelectData(None, {"index": [px, py], "value": None}))
    sliders = [out[s] for s in ex.sliders]
    n = len([s for s in sliders if s.get("visible")])
    stats = studio.ws.latent_stats(ck)
    values, residual = to_sliders(stats, m.codes[4], n, step=0.05)
    assert [s["value"] for s in sliders[:n]] == pytest.approx(values)
    assert out[ex.residual] == pytest.approx(residual.tolist())
    # on the sliders' 0.05 grid, and sliders and residual together stand for the picked clip's code
    assert all(abs(v / 0.05 - round(v / 0.05)) < 1e-6 for v in values)
    torch.testing.assert_close(slider_code(stats, [s["value"] for s in sliders[:n]], out[ex.residual]), m.codes[4],
                               atol=2e-5, rtol=0)
    label = f" (label {m.labels[4]})" if m.labels[4] is not None else ""
    assert out[ex.map_info].startswith(f"Picked **{m.names[4]}**{label}. These are the codes saved with the model")
    assert out[ex.map_orig] is None  # saved codes have no store to play the original from (the caption says so)
    assert out[ex.map_img] == out[ex.img] and out[ex.map_aud] == out[ex.aud]  # the result shown next to the map
    with Image.open(out[ex.map]) as im:  # the map redrawn with the pick highlighted
        assert im.mode == "RGB" and im.size[0] > 300
    # a click in a gap between dots picks the nearest dot; far from every dot, nothing
    near = ex.pick_on_map(ck, state, "griffinlim", 2, gr.SelectData(None, {"index": [px + 6, py - 5], "value": None}))
    assert near[ex.map_info] == out[ex.map_info]
    with pytest.warns(UserWarning, match="No clip near there"):
        missed = ex.pick_on_map(ck, state, "griffinlim", 2, gr.SelectData(None, {"index": [0, 0], "value": None}))
    assert missed == {ex.map_info: gr.skip()}  # nothing on the page changes
    with pytest.raises(ValueError, match="draw the map"):
        ex.pick_on_map(ck, None, "griffinlim", 2, gr.SelectData(None, {"index": [0, 0], "value": None}))


def test_origin_sliders_read_exactly_zero(studio):
    """Origin: every slider at 0 and the code exactly the prior's centre."""
    ex = studio.explore
    ck = studio.initial_checkpoint
    stats = studio.ws.latent_stats(ck)
    n = len(slider_specs(stats))
    for out in (ex.start_point(ck, "origin", None, None, 1.0, "zero", 1), ex.setup(ck, "zero", 1)):
        assert [out[s]["value"] for s in ex.sliders[:n]] == [0.0] * n
        torch.testing.assert_close(slider_code(stats, [0.0] * n, out[ex.residual]), torch.zeros_like(stats.mean),
                                   atol=1e-6, rtol=0)


def test_explore_move_tolerates_state_from_another_model(studio, monkeypatch):
    ex = studio.explore
    ck = studio.initial_checkpoint
    stats = studio.ws.latent_stats(ck)
    codes, _ = spy_render(monkeypatch)
    out = ex.move(ck, [0.0] * 99, 0.5, 0, 0, 0, 0, 0, "griffinlim", 2)
    with Image.open(out[ex.img]) as im:
        assert im.mode == "RGB"
    assert Path(out[ex.aud]).is_file()
    # a residual of the wrong size is dropped: the code is the mean moved by slider 1 alone
    torch.testing.assert_close(codes[-1], stats.mean + 0.5 * stats.component_sd[0] * stats.components[0],
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("which", ["first", "last"])
def test_explore_move_puts_each_slider_on_its_own_direction(studio, monkeypatch, which):
    """Slider k at v, the others at 0: code = mean + residual + v * component_sd[k] * components[k],
    for the first and the last visible slider (catches ignored values and values shifted by one)."""
    ex = studio.explore
    ck = studio.initial_checkpoint
    model, stats = studio.ws.load(ck), studio.ws.latent_stats(ck)
    n = len(slider_specs(stats))
    assert n >= 2
    k = 0 if which == "first" else n - 1
    codes, render = spy_render(monkeypatch)
    _, residual = to_sliders(stats, stats.codes[0], n)  # a real clip's residual, not zero
    values = [0.0] * MAX_SLIDERS
    ex.move(ck, residual.tolist(), *values, "zero", 1)
    torch.testing.assert_close(codes[-1], stats.mean + residual, atol=1e-6, rtol=0)
    values[k] = 1.5
    wav = ex.move(ck, residual.tolist(), *values, "zero", 1)[ex.aud]
    expected = stats.mean + residual + 1.5 * stats.component_sd[k] * stats.components[k]
    torch.testing.assert_close(codes[-1], expected, atol=1e-6, rtol=0)
    assert_same_sound(read_audio(wav)[0], render(model, expected, "zero").wave, f"slider {k + 1}")


def test_download_fsdd_offline_error_is_a_message(studio, monkeypatch):
    from studio.ui import friendly

    def download_fsdd(dest_dir, url=None, progress=None):
        progress(1, 10, "downloading")
        progress(5, 0, "downloading")  # size unknown
        raise DownloadError("cannot reach github.com: no network")

    monkeypatch.setattr(download, "download_fsdd", download_fsdd)
    with pytest.raises(gr.Error, match="no network"):  # as the page gets it: through friendly()
        friendly(studio.dataset.download_fsdd)(progress=lambda *a, **k: None)


def test_download_fsdd_then_preprocess(studio, monkeypatch, fsdd_dir):
    monkeypatch.setattr(download, "download_fsdd", lambda dest_dir, url=None, progress=None: fsdd_dir)
    monkeypatch.setattr("studio.tabs.dataset.preset", lambda name: TINY)  # the digits preset is slower; same path
    ds = studio.dataset
    out = ds.download_fsdd(progress=lambda *a, **k: None)
    assert "fsdd-digits" in out[ds.summary] and "36 clips" in out[ds.summary]
    assert (studio.ws.stores_dir / "fsdd-digits" / "config.json").is_file()
    assert out[ds.view]["value"] == str(studio.ws.stores_dir / "fsdd-digits")


def test_poll_skips_when_nothing_changed(studio):
    tr = studio.train
    first = tr.poll(-1, -1)
    assert "No training job" in first[tr.progress]
    assert first[tr.stop]["interactive"] is False  # Stop is off when nothing runs
    assert tr.poll(first[tr.seen], first[tr.seen_preview]) == {tr.progress: gr.skip()}  # nothing changed


def test_torch_threads_option_sets_torch_threads(monkeypatch, tmp_path):
    """``--torch-threads N`` sets torch to N threads before serving; importing the app changes nothing."""
    import importlib
    import os

    import app

    launched: list[dict] = []

    class Demo:
        def queue(self, **kwargs):
            return self

        def launch(self, **kwargs):
            launched.append(kwargs)

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        importlib.reload(app)  # module-level code runs again: it must leave the thread count alone
        assert torch.get_num_threads() == 3
        monkeypatch.setattr(app, "create_app", lambda ws, checkpoint=None, **options: (Demo(), None))
        for n in (2, 5):
            assert app.main(["--torch-threads", str(n), "--data-dir", str(tmp_path), "--port", "7999"]) == 0
            assert torch.get_num_threads() == n
        assert app.main(["--torch-threads", "0", "--data-dir", str(tmp_path)]) == 0  # 0: torch's own choice
        assert torch.get_num_threads() == 5
    finally:
        torch.set_num_threads(before)
    assert [kw["server_port"] for kw in launched] == [7999, 7999, 7860]
    assert app.parse_args([]).torch_threads == max(1, (os.cpu_count() or 2) // 2)


def test_hints_name_the_folders_in_use(tmp_path):
    """With --data-dir elsewhere, the form hints say where stores and runs really go."""
    from app import create_app

    ws = Workspace.at(tmp_path / "elsewhere", tmp_path)
    _, app = create_app(ws)
    assert f"Saved under {tmp_path / 'elsewhere' / 'stores'}/." in app.dataset.name.info
    assert f"Saved under {tmp_path / 'elsewhere' / 'runs'}/<name>" in app.train.name.info
    assert "data/stores" not in app.dataset.name.info


def test_a_new_store_shows_up_in_every_store_picker(tmp_path, fsdd_dir, trained):
    """After a build, the store pickers of every tab offer the new store (and the store sources appear);
    the other pickers (model, example, runs) are left as they are."""
    from app import create_app

    ws = make_workspace(tmp_path, fsdd_dir, trained[0])
    _, app = create_app(ws)
    build_named_store(ws.stores_dir, "fresh", TINY, folder=fsdd_dir)
    out = app.stores_changed(None, None, "example", "")
    assert set(out) == {app.train.store, app.reconstruct.store, app.reconstruct.source, app.explore.map_src,
                        app.notes_md}
    path = str(ws.stores_dir / "fresh")
    assert out[app.train.store]["value"] == out[app.reconstruct.store]["value"] == path
    assert ("store: fresh", path) in out[app.explore.map_src]["choices"]
    assert out[app.explore.map_src]["value"] == ""  # still the codes saved with the model
    assert [v for _, v in out[app.reconstruct.source]["choices"]] == ["example", "store", "random", "upload"]
    assert out[app.reconstruct.source]["value"] == "example"
    assert "No dataset store" not in out[app.notes_md]


def test_condition_on_labels_reaches_the_job(studio, monkeypatch):
    """The Train tab's "Condition on labels" asks the job manager for --condition label (off: no condition)."""
    tr, seen = studio.train, []

    def start(data, output, **kwargs):
        seen.append(kwargs.get("condition"))
        raise InputError("stop here")

    monkeypatch.setattr(tr.jobs, "start", start)
    store = str(studio.ws.stores_dir / "any")
    for condition in (True, False):
        with pytest.raises(InputError, match="stop here"):
            tr.start_training(store, "default", "", 1, 8, 1e-3, 2, 1.0, "cpu", 1, condition)
    assert seen == ["label", None]
