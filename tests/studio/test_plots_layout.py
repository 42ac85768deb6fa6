"""Layout of the pictures around Gradio's image buttons (download / fullscreen), which cover the
top-right corner of a displayed image: nothing informative may sit there (GitHub issue #10)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from conftest import TINY
from matplotlib.colors import to_rgb

from studio import plots

# the button area in image pixels: at the image's own size (640 px shown at 640 px), and shown in a
# 400 px column (two spectrograms side by side), where the same 70 x 40 screen pixels cover more image
AT_SIZE, IN_COLUMN = 1.0, 640 / 400


def button_region(img: np.ndarray, zoom: float) -> tuple[slice, slice]:
    """Rows and columns of ``img`` under the buttons when shown ``1 / zoom`` times its size."""
    w = img.shape[1]
    bw, bh = plots.BUTTONS_PX
    return slice(0, round(bh * zoom)), slice(w - round(bw * zoom), w)


def background(fig) -> np.ndarray:
    return np.round(np.array(to_rgb(fig.get_facecolor())) * 255).astype(np.uint8)


def outside_boxes(img: np.ndarray, boxes: list, rows: slice, cols: slice, margin: float = 2) -> np.ndarray:
    """The pixels of img[rows, cols] that lie outside every box (matplotlib display boxes, widened by
    ``margin`` pixels for the axes' spines), (N, 3)."""
    h = img.shape[0]
    yy, xx = np.mgrid[rows, cols]
    x, y = xx + 0.5, h - yy - 0.5
    keep = np.ones(yy.shape, dtype=bool)
    for bb in boxes:
        keep &= ~((x >= bb.x0 - margin) & (x <= bb.x1 + margin) & (y >= bb.y0 - margin) & (y <= bb.y1 + margin))
    return img[rows, cols][keep]


def spectrogram(title: str = "validation clip: 0_alice_0.wav") -> tuple[np.ndarray, plots._SpecFigure]:
    db = np.random.default_rng(0).uniform(-50, 30, TINY.shape).astype(np.float32)
    img = plots.spectrogram_image(db, TINY, -50, 30, title)
    return img, plots._spec_figure(TINY, db.shape, plots.SPEC_SIZE)


def test_spectrogram_top_right_corner_is_background_only():
    img, f = spectrogram()
    assert img.shape == (300, 640, 3)
    rows, cols = button_region(img, AT_SIZE)
    assert (rows.stop, cols.stop - cols.start) == (40, 70)
    assert (img[rows, cols] == background(f.fig)).all()


def test_spectrogram_labels_clear_the_buttons_in_a_narrow_column():
    img, f = spectrogram()  # only the spectrogram itself may reach under the buttons
    rest = outside_boxes(img, [f.ax.get_window_extent()], *button_region(img, IN_COLUMN))
    assert len(rest) and (rest == background(f.fig)).all()


def test_spectrogram_colour_bar_is_still_drawn():
    img, f = spectrogram()
    bar, ax = f.cbar.ax.get_window_extent(), f.ax.get_window_extent()
    assert bar.x0 > ax.x1 and bar.height > 0.6 * ax.height
    assert abs(bar.y0 - ax.y0) < 1  # from the bottom of the spectrogram up
    h = img.shape[0]
    expected = np.array(matplotlib.colormaps[plots.CMAP](0.5)[:3]) * 255
    centre = img[round(h - (bar.y0 + bar.y1) / 2), round((bar.x0 + bar.x1) / 2)]
    assert np.abs(centre - expected).max() < 6, centre
    assert f.cbar.ax.get_ylabel() == plots.COLORBAR_LABEL


@pytest.mark.parametrize("n", [2, 9])
def test_strip_top_right_corner_is_background_only(n):
    dbs = [np.random.default_rng(i).uniform(-50, 30, TINY.shape) for i in range(n)]
    fig = plots._strip_figure(dbs, TINY, -50, 30, None)
    img = plots._rgb(fig)
    assert (img[button_region(img, AT_SIZE)] == background(fig)).all()
    spectra = [ax.get_window_extent() for ax in fig.axes if ax.images]
    assert len(spectra) == n
    rest = outside_boxes(img, spectra, *button_region(img, IN_COLUMN))
    assert (rest == background(fig)).all()


def map_figure(n_labels: int, highlight: int | None = 3):
    xy = np.random.default_rng(0).normal(size=(200, 2))
    labels = [f"speaker {i % n_labels}" for i in range(200)] if n_labels else [None] * 200
    fig, ax = plots._map_figure(xy, labels, highlight, "200 clips", ("1", "2"), (6.4, 5.0))
    return plots._rgb(fig), fig, ax


@pytest.mark.parametrize("n_labels", [0, 3, 10, 15, 40])
def test_map_legend_is_inside_the_image_and_below_the_buttons(n_labels):
    img, fig, ax = map_figure(n_labels)
    h, w = img.shape[:2]
    leg = ax.get_legend().get_window_extent()
    assert leg.x0 >= 0 and leg.y0 >= 0 and leg.x1 <= w and leg.y1 <= h
    rows, cols = button_region(img, IN_COLUMN)
    assert h - leg.y1 >= rows.stop or leg.x1 <= cols.start  # clear of the buttons
    assert ax.get_window_extent().x1 < leg.x0  # beside the dots, not over them
    rest = outside_boxes(img, [ax.get_window_extent()], rows, cols)
    assert (rest == background(fig)).all()


@pytest.mark.parametrize("n_labels", [0, 10])
def test_map_legend_markers_are_not_clipped(n_labels):
    _, fig, ax = map_figure(n_labels)
    leg = ax.get_legend()
    frame = leg.get_frame().get_window_extent()
    handles = leg.legend_handles
    assert handles[-1].get_label() == "picked" and len(handles) == max(1, n_labels) + 1
    for hd in handles:  # a Line2D handle: a marker drawn at the middle of its (invisible) line
        x, y = hd.get_transform().transform(np.column_stack([hd.get_xdata(), hd.get_ydata()]))[1]
        r = (hd.get_markersize() + hd.get_markeredgewidth()) / 2 * fig.dpi / 72
        assert frame.x0 <= x - r and x + r <= frame.x1 and frame.y0 <= y - r and y + r <= frame.y1, hd.get_label()


def test_map_dots_are_visible():
    ax = map_figure(3, highlight=None)[2]
    dots = ax.collections
    assert len(dots) == 3
    for c in dots:
        assert (c.get_sizes() >= 30).all()  # points^2: at least ~6 px across
        assert np.allclose(c.get_edgecolors()[:, :3], 1.0) and (c.get_linewidths() > 0).all()  # white rim
