"""Pictures: spectrogram images, strips, the latent map and its picking, loss frames, progress bar."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY

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
    assert (geom.nearest(xy, *far) is None) == (d > 25)


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


def test_progress_html_clamps_and_escapes():
    h = plots.progress_html(1.7, "<b>run</b>", "done")
    assert "width:100.0%" in h and "&lt;b&gt;" in h
    assert "width:0.0%" in plots.progress_html(-1, "x")
