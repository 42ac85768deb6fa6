"""App-level tests: the real Gradio server on a free local port, driven with gradio_client.

One server per module (start-up costs a few seconds). Each test opens its own client (its own
session). Checks: preprocess a tiny store, train, reconstruct, move a slider, interpolate, map,
and that errors arrive as readable messages.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import LSB, assert_same_sound, launch, make_workspace, read_audio, slider_code, spy_render, wait_for
from conftest import TINY
from PIL import Image

from preprocessing.audio import join_waves
from preprocessing.store import Store
from studio.clips import from_file, from_store
from studio.latent_space import slider_specs
from studio.wording import metrics_markdown
from vae import generate, metrics
from vae.evaluate import compare
from vae.latents import zero_sliders

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

# gradio's queue uses pandas APIs that pandas 3 deprecates; not ours to fix
GRADIO_WARNINGS = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
                   pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
pytestmark = GRADIO_WARNINGS
TINY_ARGS = (TINY.sample_rate, TINY.duration, TINY.n_fft, TINY.hop_length, "global", "all")


@pytest.fixture(scope="module")
def server(tmp_path_factory, fsdd_dir, trained):
    root = tmp_path_factory.mktemp("app")
    ws = make_workspace(root, fsdd_dir, trained[0])
    demo, app, url = launch(ws)
    yield {"url": url, "app": app, "ws": ws, "fsdd": fsdd_dir}
    app.jobs.stop()
    app.jobs.wait(60)
    demo.close()


@pytest.fixture
def client(server) -> Client:
    return Client(server["url"], verbose=False)


@pytest.fixture(scope="module")
def store(server) -> str:
    """The store built through the app (by the first test that needs it)."""
    c = Client(server["url"], verbose=False)
    out = c.predict("folder", str(server["fsdd"]), None, "tiny", "digits", *TINY_ARGS, api_name="/build_store")
    return out[11]["value"]


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def check_audio(path: str, n: int | None = None, sr: int = TINY.sample_rate) -> np.ndarray:
    wave, rate = read_audio(path)
    assert rate == sr
    assert np.isfinite(wave).all() and len(wave) > 0
    if n is not None:
        assert len(wave) == n
    return wave


# ---------------------------------------------------------------------------- first launch


def test_first_launch_preselects_shipped_model_and_example(server, client):
    app = server["app"]
    assert app.initial_checkpoint == str(server["ws"].checkpoints_dir / "digits")
    example = server["ws"].default_example(app.initial_checkpoint)
    assert Path(example).name == "0_alice_0.wav"
    out = client.predict(app.initial_checkpoint, example, "zero", 8, api_name="/initial_reconstruction")
    orig_img, orig_wav, rec_img, rec_wav, phase_only, shown, info = out
    assert image_size(orig_img)[0] > 200 and image_size(rec_img)[0] > 200
    # exactly what the library makes of that example (zero phase: deterministic)
    ck = server["ws"].load(app.initial_checkpoint)
    clip = from_file(example, TINY.sample_rate, min_samples=TINY.n_fft)
    c = compare(ck, clip.wave, clip.sample_rate, "zero", 8)
    assert_same_sound(check_audio(orig_wav), c.original, "original")
    assert_same_sound(check_audio(rec_wav), c.reconstruction, "reconstruction")
    assert_same_sound(check_audio(phase_only), c.phase_only, "phase only")
    assert shown == metrics_markdown(c)
    assert info.startswith("**0_alice_0.wav**, 0.30 s at 8000 Hz")


def test_fresh_clone_without_model_or_data(tmp_path):
    """No checkpoints, examples or stores: the page loads on the Dataset tab and explains what is missing."""
    import httpx

    from studio.workspace import Workspace

    demo, app, url = launch(Workspace.at(tmp_path / "data", tmp_path))
    try:
        assert app.initial_checkpoint is None
        assert "No trained model yet" in app.notes() and "Download FSDD" in app.notes()
        assert httpx.get(url, timeout=30).status_code == 200
        c = Client(url, verbose=False)
        assert c.predict(None, "griffinlim", 8, api_name="/explore_setup")[0].startswith("ℹ️")
        # no model and no example: the Reconstruct tab stays empty
        skipped = c.predict(None, None, "griffinlim", 8, api_name="/initial_reconstruction")
        assert skipped == ({"__type__": "update"},) * 7  # nothing shown is replaced
        with pytest.raises(AppError, match="no model selected"):
            c.predict(None, "origin", None, None, 1.0, "griffinlim", 8, api_name="/explore_start")
    finally:
        demo.close()


# ---------------------------------------------------------------------------- dataset


def test_build_store_from_folder(server, client):
    out = client.predict("folder", str(server["fsdd"]), None, "folder-store", "digits", *TINY_ARGS,
                         api_name="/build_store")
    summary, per_label, skipped = out[:3]
    images, audio = out[3:7], out[7:11]
    assert "36 clips" in summary
    rows = {r[0]: r[1:] for r in per_label["data"]}
    assert rows["0"] == [8, 4, 12] and rows["all"] == [24, 12, 36]
    assert skipped["data"] == [["(none)", ""]]
    for img, wav in zip(images, audio):
        assert image_size(img)[0] > 200
        check_audio(wav, TINY.n_samples)
    # the new store appears in the other tabs' pickers at once
    for update in out[11:14]:
        assert str(server["ws"].stores_dir / "folder-store") in [v for _, v in update["choices"]]


def test_build_store_from_zip_upload_refuses_unsafe_members(server, client, tmp_path):
    z = tmp_path / "clips.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name in ("0_alice_0.wav", "1_bob_1.wav", "2_alice_5.wav", "0_bob_6.wav"):
            zf.write(server["fsdd"] / name, f"clips/{name}")
        zf.writestr("../escape.wav", b"RIFF....")
        zf.writestr("notes.txt", "hello")
    out = client.predict("upload", "", [handle_file(str(z))], "zipped", "digits", *TINY_ARGS,
                         api_name="/build_store")
    assert "4 clips" in out[0]
    reasons = {r[0]: r[1] for r in out[2]["data"]}
    assert any("unsafe path" in r for r in reasons.values())
    assert any("not an audio file" in r for r in reasons.values())
    assert not (server["ws"].uploads_dir.parent / "escape.wav").exists()


@pytest.mark.parametrize("folder,name,args,message", [
    ("/does/not/exist", "x", TINY_ARGS, "does not exist"),
    (None, "../evil", TINY_ARGS, "not allowed"),
    (None, "badhop", (8000, 0.254, 64, 128, "global", "all"), "hop_length"),
])
def test_build_store_errors_are_messages(server, client, folder, name, args, message):
    with pytest.raises(AppError, match=message):
        client.predict("folder", folder or str(server["fsdd"]), None, name, "digits", *args, api_name="/build_store")


# ---------------------------------------------------------------------------- train


def _status(url: str) -> tuple:
    return Client(url, verbose=False).predict(api_name="/train_status")


def test_train_one_epoch_then_busy_stop_resume(server, store, client):
    app, url = server["app"], server["url"]
    client.predict(None, None, api_name="/refresh_train")  # as visiting the tab does
    html = client.predict(store, "default", "run1", 1, 8, 3e-3, 4, 0.1, "cpu", api_name="/start_training")
    assert "run1" in html
    final = app.jobs.wait(120)
    assert final.status == "done", final.error
    progress, loss, recon, kl, prev_img, prev_aud, prev_rimg, prev_raud = _status(url)  # (a button is no output)
    assert "finished" in progress
    assert app.train.poll(-1, -1)[app.train.stop]["interactive"] is False  # nothing runs: Stop is off
    # each plot comes as an update: its data, and an axis of whole epochs (0 to at least 3: no 1.0, 1.1, ...)
    assert [(p["x_axis_format"], p["x_lim"]) for p in (loss, recon, kl)] == [("d", [0, 3])] * 3
    loss, recon, kl = (p["value"] for p in (loss, recon, kl))
    assert loss["columns"] == ["epoch", "value", "curve"]
    # the curves are the job's own figures, epoch by epoch
    for plot, key in ((loss, "loss"), (recon, "recon"), (kl, "kl")):
        expected = [[h["epoch"], h[part][key], curve] for h in final.history
                    for part, curve in (("train", "training"), ("val", "validation"))]
        shown = {(row[0], row[2]): row[1] for row in plot["data"]}
        assert shown == pytest.approx({(e, c): v for e, v, c in expected}, rel=1e-6), key
        assert len(plot["data"]) == len(expected)
    assert image_size(prev_img)[0] > 200 and image_size(prev_rimg)[0] > 200
    check_audio(prev_aud, TINY.n_samples)
    check_audio(prev_raud, TINY.n_samples)
    assert (server["ws"].runs_dir / "run1" / "latents.safetensors").is_file()
    # picking the finished run (1 of 1 epochs) to resume sets Epochs to 2, not the form's default of 40;
    # resuming it with Epochs at 1 says what to do
    assert app.train.run_picked(str(server["ws"].runs_dir / "run1"))["value"] == 2
    client.predict(None, None, api_name="/refresh_train")  # the session's run picker now lists run1
    with pytest.raises(AppError, match=r"^run1 has already trained 1 epochs: set Epochs above 1 to continue$"):
        client.predict(str(server["ws"].runs_dir / "run1"), 1, 8, 3e-3, 0.1, "cpu", api_name="/resume_training")

    # a long run, a second request while it runs, then Stop and Resume
    client.predict(store, "default", "run2", 200, 8, 3e-3, 4, 0.1, "cpu", api_name="/start_training")
    with pytest.raises(AppError, match="already running"):
        client.predict(store, "default", "run3", 1, 8, 3e-3, 4, 0.1, "cpu", api_name="/start_training")
    wait_for(lambda: app.jobs.snapshot().epoch >= 1, timeout=120)
    client.predict(api_name="/stop_training")
    stopped = app.jobs.wait(120)
    assert stopped.status == "stopped"
    assert (server["ws"].runs_dir / "run2" / "last" / "training_state.pt").is_file()
    done_epochs = stopped.epoch
    runs = client.predict(None, None, api_name="/refresh_train")[1]
    assert str(server["ws"].runs_dir / "run2") in [v for _, v in runs["choices"]]
    client.predict(str(server["ws"].runs_dir / "run2"), done_epochs + 1, 8, 3e-3, 0.1, "cpu",
                   api_name="/resume_training")
    resumed = app.jobs.wait(120)
    assert resumed.status == "done", resumed.error
    assert resumed.epoch == done_epochs + 1
    epochs = [h["epoch"] for h in resumed.history]
    # the curves carry on from the stopped run (an epoch stopped on its very last step has no
    # validation entry: vae.train records it as complete without validating it)
    assert epochs == sorted(set(epochs)) and epochs[0] == 1 and epochs[-1] == done_epochs + 1
    assert len(epochs) >= done_epochs
    # the new checkpoints are offered for reconstruction without a restart
    ckpts = client.predict(None, None, None, None, api_name="/refresh_reconstruct")[0]
    assert any("run1" in label for label, _ in ckpts["choices"])


def test_train_errors_are_messages(server, client, store):
    client.predict(None, None, api_name="/refresh_train")
    with pytest.raises(AppError, match="pick a dataset store"):
        client.predict(None, "default", "", 1, 8, 1e-3, 4, 0.1, "cpu", api_name="/start_training")
    with pytest.raises(AppError, match="lr must be positive"):
        client.predict(store, "default", "x", 1, 8, 0.0, 4, 0.1, "cpu", api_name="/start_training")
    taken = server["ws"].runs_dir / "taken"  # a run folder with something in it (made here: no test order)
    taken.mkdir(parents=True, exist_ok=True)
    (taken / "config.json").write_text("{}")
    with pytest.raises(AppError, match="a run named 'taken' already exists"):
        client.predict(store, "default", "taken", 1, 8, 1e-3, 4, 0.1, "cpu", api_name="/start_training")


# ---------------------------------------------------------------------------- reconstruct


def test_reconstruct_from_store_and_random_and_upload(server, client, store):
    ck = server["app"].initial_checkpoint
    client.predict(ck, None, None, None, api_name="/refresh_reconstruct")
    first = client.predict(store, api_name="/store_clips")["value"]
    out = client.predict(ck, "store", None, store, first, None, "zero", 8, api_name="/reconstruct")
    assert image_size(out[0]) == image_size(out[2])
    orig, recon = check_audio(out[1]), check_audio(out[3])
    # the sounds and figures are the library's for that clip (zero phase: deterministic) ...
    clip = from_store(Store(store), first, TINY.sample_rate)
    c = compare(server["ws"].load(ck), clip.wave, clip.sample_rate, "zero", 8)
    assert_same_sound(orig, clip.wave, "original")
    assert_same_sound(recon, c.reconstruction, "reconstruction")
    assert out[5] == metrics_markdown(c)
    # ... and the figures shown measure the two sounds served
    lsd, sc = shown_metrics(out[5])
    assert lsd == pytest.approx(metrics.log_spectral_distance(orig, recon, TINY.sample_rate), abs=0.02)
    assert sc == pytest.approx(metrics.spectral_convergence(orig, recon, TINY.sample_rate), abs=0.002)
    out = client.predict(ck, "random", None, store, None, None, "zero", 8, api_name="/reconstruct")
    st = Store(store)
    test_clips = {st.clip_name(i): i for i in st.indices("test")}
    name = re.match(r"\*\*(.+?)\*\*", out[6]).group(1)
    assert name in test_clips  # a random clip of the test split
    clip = from_store(st, test_clips[name], TINY.sample_rate)
    c = compare(server["ws"].load(ck), clip.wave, clip.sample_rate, "zero", 8)
    assert_same_sound(check_audio(out[3]), c.reconstruction, name)
    upload = handle_file(str(server["fsdd"] / "1_bob_5.wav"))
    out = client.predict(ck, "upload", None, None, None, upload, "griffinlim", 4, api_name="/reconstruct")
    assert len(check_audio(out[1])) == len(check_audio(out[3])) == 2400  # the file's own length
    assert "1_bob_5.wav" in out[6]


def shown_metrics(markdown: str) -> tuple[float, float]:
    """(log-spectral distance, spectral convergence) from the VAE row of the metrics table."""
    m = re.search(r"\| \*\*VAE reconstruction\*\*[^|]*\| ([0-9.]+) \| ([0-9.]+) \|", markdown)
    assert m, markdown
    return float(m.group(1)), float(m.group(2))


def test_reconstruct_errors_are_messages(server, client, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio")
    ck = server["app"].initial_checkpoint
    with pytest.raises(AppError, match="not readable as audio"):
        client.predict(ck, "upload", None, None, None, handle_file(str(bad)), "griffinlim", 4, api_name="/reconstruct")
    with pytest.raises(AppError, match="no model selected"):
        client.predict(None, "upload", None, None, None, handle_file(str(bad)), "griffinlim", 4,
                       api_name="/reconstruct")


# ---------------------------------------------------------------------------- explore


def test_explore_sliders_move_the_sound(server, client, monkeypatch):
    """Zero phase throughout, so a sound is a function of the slider values alone: the same values
    give the same sound, and each slider moves the code along its own direction, by its own SD."""
    path = server["app"].initial_checkpoint
    ck, stats = server["ws"].load(path), server["ws"].latent_stats(path)
    codes, render = spy_render(monkeypatch)
    setup = client.predict(path, "zero", 8, api_name="/explore_setup")
    info, sliders = setup[0], setup[1:7]
    assert "sliders" in info
    n = len(slider_specs(stats))
    assert 2 <= n <= 4  # latent_dim 4: at most four directions; the test needs a first and a last
    assert [bool(s.get("visible")) for s in sliders] == [True] * n + [False] * (6 - n)
    # the sliders start at the origin: every slider exactly 0, the origin kept as the residual
    origin_values, residual = zero_sliders(stats, torch.zeros(ck.model_cfg.latent_dim), n)
    assert [s["value"] for s in sliders[:n]] == origin_values == [0.0] * n
    values = [s.get("value", 0) for s in sliders]
    origin = check_audio(setup[8], TINY.n_samples)

    def move(vals, api="/explore_move"):
        img, wav = client.predict(path, *vals, "zero", 8, api_name=api)
        assert image_size(img)[0] > 200
        return check_audio(wav, TINY.n_samples), codes[-1]

    w0, z0 = move(values)
    assert np.array_equal(w0, origin)  # the sliders where setup left them: the origin's sound
    w0b, _ = move(values)
    assert np.array_equal(w0, w0b)  # nothing moved: the same sound
    torch.testing.assert_close(z0, slider_code(stats, values[:n], residual), atol=1e-6, rtol=0)
    for k in (0, n - 1):
        moved = list(values)
        moved[k] += 1.0
        wk, zk = move(moved)
        # +1 on slider k moves the code by component_sd[k] * components[k], nothing else
        torch.testing.assert_close(zk - z0, stats.component_sd[k] * stats.components[k], atol=1e-5, rtol=0)
        expected = slider_code(stats, moved[:n], residual)
        torch.testing.assert_close(zk, expected, atol=1e-6, rtol=0)
        assert_same_sound(wk, render(ck, expected, "zero").wave, f"slider {k + 1}")
        assert np.abs(wk - w0).max() > 50 * LSB, f"moving slider {k + 1} did not change the sound"
        # letting go renders the same position (with the final settings)
        released, zr = move(moved, "/explore_release")
        assert np.array_equal(released, wk) and torch.equal(zr, zk)
    hidden = list(values)
    hidden[n] = 2.0  # a slider that is not shown has no direction: no effect
    wh, zh = move(hidden)
    assert torch.equal(zh, z0) and np.array_equal(wh, w0)
    _, wav = client.predict(path, *values, "griffinlim", 8, api_name="/explore_release")
    check_audio(wav, TINY.n_samples)
    start = client.predict(path, "prior", None, None, 0.5, "griffinlim", 8, api_name="/explore_start")
    assert all(-3 <= s["value"] <= 3 for s in start[:6] if s.get("visible"))


def test_interpolate_gives_strip_and_audio_per_step(server, client):
    ck = server["app"].initial_checkpoint
    client.predict(ck, "zero", 8, api_name="/explore_setup")
    strip, whole, _, first = client.predict(ck, "label:0", "label:1", 5, "zero", 8, api_name="/interpolate")
    w, h = image_size(strip)
    assert w > h > 100
    # the library's five steps from the mean code of label 0 to that of label 1 (zero phase: deterministic)
    stats = server["ws"].latent_stats(ck)
    steps = generate.render_many(server["ws"].load(ck), generate.interpolate(stats.label_means[0],
                                                                              stats.label_means[1], 5), "zero")
    gap = int(0.15 * TINY.sample_rate)
    assert_same_sound(check_audio(whole, 5 * TINY.n_samples + 4 * gap),
                      join_waves([r.wave for r in steps], TINY.sample_rate), "all steps")
    assert_same_sound(check_audio(first, TINY.n_samples), steps[0].wave, "step 1")
    third = client.predict(3, api_name="/interpolation_step")
    assert_same_sound(check_audio(third, TINY.n_samples), steps[2].wave, "step 3")
    with pytest.raises(AppError, match=r"greater than maximum|does not exist"):
        client.predict(9, api_name="/interpolation_step")
    with pytest.raises(AppError):
        client.predict(ck, "label:0", "label:nope", 5, "griffinlim", 8, api_name="/interpolate")


def test_map_of_saved_codes_and_of_a_store(server, client, store):
    ck = server["app"].initial_checkpoint
    img, info = client.predict(ck, "", api_name="/draw_map")
    assert image_size(img)[0] > 300 and "Click" in info
    client.predict(ck, None, "", api_name="/refresh_explore")
    img, _ = client.predict(ck, store, api_name="/draw_map")
    assert image_size(img)[0] > 300
