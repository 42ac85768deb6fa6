"""Pictures: spectrogram images, strips, the latent map and its picking, loss plots, PNG files, progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

from studio import plots


def test_spectrogram_image_is_rgb_and_reuses_its_figure():
    db = np.linspace(-50, 30, TINY.n_freq * TINY.n_frames, dtype=np.float32).reshape(TINY.shape)
    a = plots.spectrogram_image(db, TINY, -50, 30, "a")
    b = plots.spectrogram_image(db[::-1].copy(), TINY, -50, 30, "b")
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert a.shape == b.shape == (300, 640, 3)
    assert not np.array_equal(a, b)
    n = len(plots._figures)
    plots.spectrogram_image(db, TINY, -40, 20, "c")
    assert len(plots._figures) == n  # same geometry: the cached figure is redrawn


def test_same_colour_scale_gives_same_colours():
    db = np.full(TINY.shape, -10.0, dtype=np.float32)
    quiet = plots.spectrogram_image(db, TINY, -50, 30, "x")
    loud = plots.spectrogram_image(db + 30, TINY, -50, 30, "x")
    own = plots.spectrogram_image(db + 30, TINY, None, None, "x")  # own range: flat image, lowest colour
    centre = (150, 300)
    assert not np.array_equal(quiet[centre], loud[centre])
    assert not np.array_equal(loud[centre], own[centre])


def test_extent_is_seconds_and_hertz():
    t0, t1, f0, f1 = plots.extent(TINY, TINY.n_frames)
    assert (t0, f0) == (0.0, 0.0)
    assert t1 == pytest.approx(TINY.n_frames * TINY.hop_length / TINY.sample_rate)
    assert f1 == pytest.approx(TINY.sample_rate / 2)


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros(TINY.n_freq), np.full(TINY.shape, np.nan)])
def test_spectrogram_image_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        plots.spectrogram_image(bad, TINY)


def test_strip_image_grows_with_steps():
    dbs = [np.random.default_rng(i).uniform(-50, 30, TINY.shape) for i in range(7)]
    img = plots.strip_image(dbs, TINY, -50, 30, [str(i) for i in range(7)])
    small = plots.strip_image(dbs[:2], TINY, -50, 30)
    assert img.shape[1] > small.shape[1] and img.shape[2] == 3
    with pytest.raises(ValueError):
        plots.strip_image([], TINY, 0, 1)


def test_latent_map_picks_the_point_under_the_click():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(40, 2))
    labels = [str(i % 3) for i in range(40)]
    img, geom = plots.latent_map_image(xy, labels, highlight=5)
    assert img.shape == (geom.height, geom.width, 3)
    px = geom.to_pixels(xy)
    for i in (0, 7, 39):
        assert geom.nearest(xy, *px[i]) == i
    assert geom.nearest(xy, 1, 1) is None  # outside the axes
    far = (geom.left + 2, geom.top + 2)
    d = np.hypot(*(px - np.array(far)).T).min()
    assert (geom.nearest(xy, *far) is None) == (d > geom.pick_radius)
    assert (geom.nearest(xy, *far, max_distance=25) is None) == (d > 25)


def flat_axes(left: float = 50, top: float = 20, width: float = 500, height: float = 400) -> plots.MapAxes:
    """Axes whose data units are pixels (x right, y up from the bottom of the axes)."""
    return plots.MapAxes(640, 500, left, left + width, top, top + height, (0.0, width), (0.0, height))


def test_pick_radius_scales_with_the_axes():
    assert flat_axes().pick_radius == pytest.approx(0.06 * np.hypot(500, 400))  # 38.4 px
    assert flat_axes(width=200, height=150).pick_radius == 30  # 6% would be 15: at least 30


def test_a_click_in_a_gap_picks_the_nearest_dot():
    geom = flat_axes()  # radius 0.06 * 640.3 = 38.42 px
    xy = np.array([[100.0, 100.0], [160.0, 100.0], [400.0, 300.0]])  # pixels (150, 320), (210, 320), (450, 120)
    assert geom.nearest(xy, 150, 320) == 0
    assert geom.nearest(xy, 178, 320) == 0 and geom.nearest(xy, 182, 320) == 1  # in the 60 px gap
    assert geom.nearest(xy, 450 + 38, 120) == 2  # 38 px: within the radius
    assert geom.nearest(xy, 450, 120 - 39) is None  # 39 px: beyond it
    assert geom.nearest(xy, 150 - 29, 320 - 24) == 0  # 37.6 px diagonally
    assert geom.nearest(xy, 300, 200) is None  # far from every dot


def test_small_axes_pick_within_30_px():
    geom = flat_axes(width=200, height=150)
    xy = np.array([[100.0, 75.0]])  # pixel (150, 95)
    assert geom.nearest(xy, 150 + 30, 95) == 0
    assert geom.nearest(xy, 150 + 30.5, 95) is None
    assert geom.nearest(xy, 150, 95 + 29.9, max_distance=29.8) is None


def test_a_click_outside_the_axes_picks_nothing():
    geom = flat_axes()
    xy = np.array([[0.0, 0.0], [500.0, 400.0]])  # corners: pixels (50, 420) and (550, 20)
    assert geom.nearest(xy, 51, 419) == 0
    assert geom.nearest(xy, 45, 420) is None and geom.nearest(xy, 50, 425) is None  # 5 px outside
    assert geom.nearest(xy, 555, 20) is None and geom.nearest(xy, 550, 15) is None
    assert geom.nearest(np.zeros((0, 2)), 100, 100) is None


def test_latent_map_unlabelled_and_mismatch():
    xy = np.array([[0.0, 0.0], [1.0, 2.0], [-1.0, 0.5]])
    img, geom = plots.latent_map_image(xy, [None, None, None])
    assert img.shape == (geom.height, geom.width, 3)
    for px, py in geom.to_pixels(xy):  # a blue dot where each point is, no blue between them
        r, _, b = img[round(py), round(px)].astype(int)
        assert b > r + 50, (px, py, img[round(py), round(px)])
    mid = geom.to_pixels(np.array([[0.27, 1.37]]))[0]
    r, _, b = img[round(mid[1]), round(mid[0])].astype(int)
    assert abs(b - r) < 10 and r > 200
    assert plots.latent_map_image(np.zeros((3, 2)), [None, None, None])[0].shape == img.shape  # one spot is fine
    with pytest.raises(ValueError):
        plots.latent_map_image(np.zeros((3, 2)), ["a"])


def test_loss_frames_split_by_metric_and_curve():
    history = [
        {"epoch": 1, "train": {"loss": 3.0, "recon": 0.1, "kl": 5.0}, "val": {"loss": 2.5, "recon": 0.09, "kl": 4.0}},
        {"epoch": 2, "train": {"loss": 2.0, "recon": 0.05, "kl": 6.0}, "val": {"loss": 2.1, "recon": 0.06, "kl": 5.5}},
    ]
    current = {"epoch": 2.5, "train": {"loss": 1.8, "recon": 0.04, "kl": 6.1}}
    frames = plots.loss_frames(history, current)
    assert set(frames) == {"loss", "recon", "kl"}
    loss = frames["loss"]
    assert list(loss.columns) == ["epoch", "value", "curve"]
    assert len(loss) == 5
    assert loss[loss.curve == "training"].epoch.tolist() == [1.0, 2.0, 2.5]
    assert loss[loss.curve == "validation"].value.tolist() == [2.5, 2.1]
    assert plots.loss_frames([])["kl"].empty


def vega_tick_step(lo: float, hi: float, width_px: float, min_step: float | None) -> float:
    """The step of the ticks Vega draws on a linear axis (d3's tickIncrement), with Vega-Lite's default
    ``tickCount`` (width / 40) and ``tickMinStep`` (1 when the format is "d")."""
    count = np.ceil(width_px / 40)
    if min_step is not None:
        count = min(count, np.floor((hi - lo) / min_step) + 1)
    step = (hi - lo) / max(0, count)
    power = np.floor(np.log10(step))
    error = step / 10**power
    factor = 10 if error >= np.sqrt(50) else 5 if error >= np.sqrt(10) else 2 if error >= np.sqrt(2) else 1
    return factor * 10**power


def test_vega_tick_step_model_matches_what_the_browser_showed():
    assert vega_tick_step(1, 2.4, 640, None) == pytest.approx(0.1)  # issue #10: 1.0, 1.1, 1.2, ...
    assert vega_tick_step(1, 2.4, 640, 1) == pytest.approx(0.5)  # integer format alone: "1", "2", "2"


@pytest.mark.parametrize("n_epochs", [0, 1, 2, 2.4, 3, 4, 5, 7, 10, 13, 30, 100, 1000])
def test_loss_plot_kwargs_give_whole_epoch_ticks(n_epochs):
    kw = plots.loss_plot_kwargs(n_epochs)
    assert kw["x_axis_format"] == "d"  # integer labels; Vega-Lite then sets tickMinStep 1
    lo, hi = kw["x_lim"]
    assert lo == 0 and hi >= max(n_epochs, plots.MIN_EPOCH_AXIS) and hi == int(hi)  # all the run fits
    for width in (150, 200, 260, 350, 500, 700, 1000, 1400, 2500):
        step = vega_tick_step(lo, hi, width, 1)
        assert step >= 1 and step == int(step), (width, step)


def test_loss_plot_kwargs_are_gradio_lineplot_arguments():
    import inspect

    import gradio as gr

    assert set(plots.loss_plot_kwargs(5)) <= set(inspect.signature(gr.LinePlot.__init__).parameters)
    gr.LinePlot(None, x="epoch", y="value", color="curve", **plots.loss_plot_kwargs(5))


def test_loss_plot_value_hides_empty_frames():
    assert plots.loss_plot_value(plots.loss_frames([])["loss"]) is None
    frame = plots.loss_frames([{"epoch": 1, "train": {"loss": 1.0}}])["loss"]
    assert plots.loss_plot_value(frame) is frame


@pytest.mark.parametrize("name, stem", [
    ("digits_0_alice_reconstruction", "digits_0_alice_reconstruction"),
    ("my run: 0_alice_0.wav original", "my_run_0_alice_0.wav_original"),
    ("../../etc/passwd", "etc_passwd"),
    ("Ärger ünd Öl", "Arger_und_Ol"),
    ("声音", "image"),
    ("...", "image"),
    ("", "image"),
    ("x" * 200, "x" * 80),
])
def test_save_png_names_the_file_safely(tmp_path, name, stem):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    path = Path(plots.save_png(rgb, tmp_path, name))
    assert path.name == f"{stem}.png"
    assert path.parent.parent == tmp_path  # inside the directory, in a folder of its own
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert np.array_equal(np.asarray(im), rgb)


def test_save_png_keeps_same_names_apart_and_checks_input(tmp_path):
    rgb = plots.spectrogram_image(np.zeros(TINY.shape, dtype=np.float32), TINY, title="x")
    a, b = plots.save_png(rgb, tmp_path, "clip"), plots.save_png(rgb, tmp_path, "clip")
    assert a != b and Path(a).name == Path(b).name == "clip.png"
    for bad in (rgb[..., 0], rgb.astype(np.float32), np.zeros((4, 4, 4), dtype=np.uint8)):
        with pytest.raises(ValueError):
            plots.save_png(bad, tmp_path, "bad")


def test_progress_html_clamps_and_escapes():
    h = plots.progress_html(1.7, "<b>run</b>", "done")
    assert "width:100.0%" in h and "&lt;b&gt;" in h
    assert "width:0.0%" in plots.progress_html(-1, "x")
