"""Pictures for people: spectrograms, strips of them, the latent map, loss curves, a progress bar.

Spectrogram images are drawn with matplotlib on figures that are created once and reused
(only the image data, colour limits and title change), so an interactive update costs one
redraw of a small figure rather than building a new one. Every spectrogram has time in seconds,
frequency in Hz and a colour bar in dB, because the audience may never have seen one.

Images are returned as RGB ``uint8`` arrays (H, W, 3), which ``gr.Image`` displays directly;
:func:`save_png` writes one to a named file, so that its download has a meaningful name.
"""

from __future__ import annotations

import html
import math
import re
import threading
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede any pyplot import elsewhere in the process

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from preprocessing.config import SpectrogramConfig

if TYPE_CHECKING:
    import pandas as pd

CMAP = "magma"  # perceptually uniform, dark = quiet, bright = loud; readable in greyscale too
DPI = 100
SPEC_SIZE = (6.4, 3.0)  # inches -> 640 x 300 pixels
COLORBAR_LABEL = "loudness (dB)"
# Gradio overlays its download/fullscreen buttons on an image's top-right corner: about 70 x 40 px on
# screen, which is more of the image when it is shown smaller than its size (e.g. 112 x 64 image pixels
# for a 640 px image in a 400 px column). Nothing informative goes there: the colour bar stops short of
# the top of its axes (its top label and its title sit lower), and the map's legend starts lower.
BUTTONS_PX = (70, 40)
COLORBAR_KW = {"shrink": 0.72, "anchor": (0.0, 0.0), "aspect": 14}  # 72% of the axes height from the bottom
MAP_DOT_SIZE = 36  # points^2: ~7 px across at 100 dpi
MAP_LEGEND_TOP = 0.86  # the legend's top, in axes fractions (below the image's buttons)
PICK_RADIUS = (0.06, 30.0)  # a click picks the nearest dot within 6% of the axes diagonal, at least 30 px
LABEL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]


def extent(cfg: SpectrogramConfig, n_frames: int) -> tuple[float, float, float, float]:
    """(t0, t1, f0, f1): the axes a spectrogram of ``n_frames`` frames covers, in s and Hz."""
    return (0.0, n_frames * cfg.hop_length / cfg.sample_rate, 0.0, cfg.n_freq * cfg.sample_rate / cfg.n_fft)


def _rgb(fig: Figure) -> np.ndarray:
    canvas = fig.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8


class _SpecFigure:
    """One reusable figure: axes, image artist and colour bar for spectrograms of one geometry.

    A full matplotlib draw of this figure takes ~100 ms on a small CPU (text layout dominates), too
    slow for a slider being dragged. So the figure is drawn once per (title, colour scale) as a
    *frame*, and each new spectrogram is colour-mapped with numpy and pasted into the frame's axes
    box (nearest-neighbour, like ``interpolation="nearest"``): about 1 ms instead of 100.
    """

    MAX_FRAMES = 8  # e.g. "Original" and "Reconstruction" on one colour scale alternate without redrawing

    def __init__(self, ext: tuple[float, float, float, float], shape: tuple[int, int], size: tuple[float, float]):
        self.lock = threading.Lock()
        # (title, vmin, vmax) -> (frame (H, W, 3), frame row -> spectrogram row, frame col -> spectrogram col,
        # (top, bottom, left, right) of the pasted area in frame pixels); most recently used last
        self.frames: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int, int]]] = \
            OrderedDict()
        self.fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_subplot()
        self.im = self.ax.imshow(np.zeros(shape, dtype=np.float32), origin="lower", aspect="auto", extent=ext,
                                 cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
        self.cbar = self.fig.colorbar(self.im, ax=self.ax, pad=0.02, **COLORBAR_KW)
        self.cbar.set_label(COLORBAR_LABEL)
        self.ax.set_xlabel("time (s)")
        self.ax.set_ylabel("frequency (Hz)")
        self.ax.spines[:].set_visible(False)  # the pasted image covers the whole axes box

    def _draw_frame(self, vmin: float, vmax: float, title: str) -> tuple:
        self.im.set_clim(vmin, vmax)
        self.ax.set_title(title, fontsize=11)
        frame = _rgb(self.fig)
        h = frame.shape[0]
        bb = self.ax.get_window_extent()
        top, bottom = round(h - bb.y1), round(h - bb.y0)
        left, right = round(bb.x0), round(bb.x1)
        n_rows, n_cols = self.im.get_array().shape
        y = (np.arange(top, bottom) + 0.5 - (h - bb.y1)) / bb.height  # 0 at the top of the axes
        x = (np.arange(left, right) + 0.5 - bb.x0) / bb.width
        rows = np.clip((1.0 - y) * n_rows, 0, n_rows - 1).astype(np.intp)  # origin="lower"
        cols = np.clip(x * n_cols, 0, n_cols - 1).astype(np.intp)
        return frame, rows, cols, (top, bottom, left, right)

    def render(self, db: np.ndarray, vmin: float, vmax: float, title: str) -> np.ndarray:
        with self.lock:
            key = (title, float(vmin), float(vmax))
            if key in self.frames:
                self.frames.move_to_end(key)
            else:
                self.frames[key] = self._draw_frame(vmin, vmax, title)
                if len(self.frames) > self.MAX_FRAMES:
                    self.frames.popitem(last=False)
            frame, rows, cols, (top, bottom, left, right) = self.frames[key]
            self.im.set_clim(vmin, vmax)  # the norm below must match this frame's colour bar
            rgba = self.im.cmap(self.im.norm(db), bytes=True)  # (F, T, 4) uint8, same map and scale
            out = frame.copy()
            out[top:bottom, left:right] = rgba[np.ix_(rows, cols)][..., :3]
            return out


_figures: dict[tuple, _SpecFigure] = {}
_figures_lock = threading.Lock()


def _spec_figure(cfg: SpectrogramConfig, shape: tuple[int, int], size: tuple[float, float]) -> _SpecFigure:
    key = (extent(cfg, shape[1]), shape, size)
    with _figures_lock:
        fig = _figures.get(key)
        if fig is None:
            if len(_figures) > 32:  # many geometries (long uploads): start over rather than grow
                _figures.clear()
            fig = _figures[key] = _SpecFigure(key[0], shape, size)
        return fig


def spectrogram_image(db: np.ndarray, cfg: SpectrogramConfig, vmin: float | None = None, vmax: float | None = None,
                      title: str = "", size: tuple[float, float] = SPEC_SIZE) -> np.ndarray:
    """A dB spectrogram (F, T) as an RGB image with labelled axes and a dB colour bar.

    ``vmin``/``vmax`` fix the colour scale (pass the same values to compare two images);
    by default the image's own range is used.
    """
    db = np.asarray(db, dtype=np.float32)
    if db.ndim != 2 or db.shape[0] != cfg.n_freq:
        raise ValueError(f"expected a spectrogram ({cfg.n_freq}, frames), got shape {db.shape}")
    if not np.isfinite(db).all():
        raise ValueError("spectrogram contains NaN or infinite values")
    lo = float(db.min()) if vmin is None else float(vmin)
    hi = float(db.max()) if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + 1.0
    return _spec_figure(cfg, db.shape, size).render(db, lo, hi, title)


def strip_image(dbs: Sequence[np.ndarray], cfg: SpectrogramConfig, vmin: float, vmax: float,
                titles: Sequence[str] | None = None) -> np.ndarray:
    """A row of spectrograms (each (F, T) in dB) on one colour scale, e.g. the steps of an interpolation."""
    if not len(dbs):
        raise ValueError("nothing to draw: no spectrograms")
    return _rgb(_strip_figure(dbs, cfg, vmin, vmax, titles))


def _strip_figure(dbs: Sequence[np.ndarray], cfg: SpectrogramConfig, vmin: float, vmax: float,
                  titles: Sequence[str] | None) -> Figure:
    """The figure of :func:`strip_image`, not yet drawn."""
    n = len(dbs)
    titles = list(titles) if titles is not None else [str(i + 1) for i in range(n)]
    fig = Figure(figsize=(max(6.4, 1.45 * n + 1.2), 2.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    im = None
    for k, (ax, db, title) in enumerate(zip(axes, dbs, titles)):
        db = np.asarray(db, dtype=np.float32)
        im = ax.imshow(db, origin="lower", aspect="auto", extent=extent(cfg, db.shape[1]), cmap=CMAP,
                       vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("time (s)", fontsize=8)
        if k == 0:
            ax.set_ylabel("frequency (Hz)", fontsize=8)
    cbar = fig.colorbar(im, ax=list(axes), pad=0.03, fraction=0.03, **COLORBAR_KW)  # pad: axes clear of the buttons
    cbar.set_label(COLORBAR_LABEL, fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    return fig


@dataclass
class MapAxes:
    """Where the axes of a latent-map image are, to turn a click (pixels) into data coordinates."""

    width: int  # image size, pixels
    height: int
    left: float  # axes box in image pixels (origin top-left)
    right: float
    top: float
    bottom: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Data coordinates (N, 2) -> image pixels (N, 2) (x right, y down)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        fx = (xy[:, 0] - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (xy[:, 1] - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return np.stack([self.left + fx * (self.right - self.left), self.bottom - fy * (self.bottom - self.top)], 1)

    @property
    def pick_radius(self) -> float:
        """How far (pixels) from a dot a click still picks it: generous, so a click in a gap between
        dots picks the nearest, but not the whole map."""
        frac, least = PICK_RADIUS
        return max(least, frac * float(np.hypot(self.right - self.left, self.bottom - self.top)))

    def nearest(self, xy: np.ndarray, px: float, py: float, max_distance: float | None = None) -> int | None:
        """Index of the point of ``xy`` (data, (N, 2)) drawn nearest the click (px, py), or None if the
        click is outside the axes or further than ``max_distance`` pixels (default :attr:`pick_radius`)
        from every point."""
        if not (self.left <= px <= self.right and self.top <= py <= self.bottom) or len(xy) == 0:
            return None
        d = np.hypot(*(self.to_pixels(xy) - np.array([px, py])).T)
        i = int(np.argmin(d))
        return i if d[i] <= (self.pick_radius if max_distance is None else max_distance) else None


def _dot(colour: str, name: str) -> Line2D:
    """A legend entry: one dot as drawn on the map (a scatter's own handle would take its size)."""
    return Line2D([], [], linestyle="", marker="o", markersize=7, markerfacecolor=colour, markeredgecolor="white",
                  markeredgewidth=0.5, label=name)


def _scatter(ax: Axes, xy: np.ndarray, colour: str, alpha: float) -> None:
    """Dots of one colour, each with a thin white rim so that overlapping clusters stay readable."""
    ax.scatter(xy[:, 0], xy[:, 1], s=MAP_DOT_SIZE, color=colour, alpha=alpha, edgecolors="white", linewidths=0.5)


def _legend_columns(n: int, size: tuple[float, float]) -> int:
    """Columns for ``n`` legend entries to fit between :data:`MAP_LEGEND_TOP` and the image's bottom."""
    rows = int((MAP_LEGEND_TOP * (size[1] * DPI - 75) - 25) // 17.5)  # ~75 px: title, x label; 17.5 px a row
    return max(1, -(-n // max(1, rows)))


def _draw_values(ax: Axes, xy: np.ndarray, values: np.ndarray, name: str) -> None:
    """Scatter ``xy`` coloured by a number per point (``values`` (N,)), with a colour bar titled ``name``."""
    dots = ax.scatter(xy[:, 0], xy[:, 1], s=MAP_DOT_SIZE, c=np.asarray(values, dtype=np.float64), cmap="viridis",
                      alpha=0.9, edgecolors="white", linewidths=0.5)
    ax.figure.colorbar(dots, ax=ax, label=name, shrink=0.8)


def _draw_dots(ax: Axes, xy: np.ndarray, labels: Sequence[str | None], highlight: int | None,
               values: np.ndarray | None = None, value_name: str = "") -> list[Line2D]:
    """Scatter ``xy`` coloured by label, or by ``values`` (N,) when given (and ring the highlighted point);
    return the legend entries."""
    if values is not None:
        _draw_values(ax, xy, values, value_name)
        labels = []  # no label entries: the colour bar explains the colours
    names = sorted({str(lab) for lab in labels if lab is not None})
    lab_arr = np.array([str(lab) if lab is not None else "" for lab in labels], dtype=object)
    handles = []
    if not names and values is None:  # the legend still explains the dot, and keeps the top-right corner off the axes
        _scatter(ax, xy, "#1f77b4", 0.8)
        handles.append(_dot("#1f77b4", "clip (no label)"))
    for k, name in enumerate(names):
        colour = LABEL_COLOURS[k % len(LABEL_COLOURS)]
        _scatter(ax, xy[lab_arr == name], colour, 0.85)
        handles.append(_dot(colour, name))
    unl = lab_arr == ""
    if names and unl.any():
        _scatter(ax, xy[unl], "#999999", 0.7)
        handles.append(_dot("#999999", "(no label)"))
    if highlight is not None and 0 <= highlight < len(xy):
        ax.scatter([xy[highlight, 0]], [xy[highlight, 1]], s=200, facecolors="none", edgecolors="black", linewidths=2)
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=9, markerfacecolor="none",
                              markeredgecolor="black", markeredgewidth=2, label="picked"))
    return handles


def _map_figure(xy: np.ndarray, labels: Sequence[str | None], highlight: int | None, title: str,
                axis_names: tuple[str, str], size: tuple[float, float],
                trajectory: np.ndarray | None = None, values: np.ndarray | None = None,
                value_name: str = "") -> tuple[Figure, Axes]:
    """The latent map's figure and axes, not yet drawn (see :func:`latent_map_image`)."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles = _draw_dots(ax, xy, labels, highlight, values, value_name)
    if trajectory is not None and len(trajectory) > 1:  # the limits below stay the dots': clicks map the same
        line, = ax.plot(trajectory[:, 0], trajectory[:, 1], "-", color="black", lw=1.2, alpha=0.8, zorder=4,
                        marker=".", markersize=3, label="its frames, in time order")
        ax.plot(*trajectory[0], "o", color="black", markersize=5, zorder=5)
        handles = [*handles, line]
    if values is None:
        labelled = any(lab is not None for lab in labels)
        ax.legend(handles=handles, title="label" if labelled else None, fontsize=8, title_fontsize=8,
                  loc="upper left", bbox_to_anchor=(1.02, MAP_LEGEND_TOP), borderaxespad=0,
                  ncols=_legend_columns(len(handles), size))
    elif handles:  # the colour bar is on the right: the picked clip's entries go inside, where they hide least
        ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.25)
    if len(xy):
        pad = 0.05 * max(1e-6, float(np.ptp(xy[:, 0]))), 0.05 * max(1e-6, float(np.ptp(xy[:, 1])))
        ax.set_xlim(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0])
        ax.set_ylim(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1])
    return fig, ax


def latent_map_image(xy: np.ndarray, labels: Sequence[str | None], highlight: int | None = None,
                     title: str = "Latent space: each dot is one clip",
                     axis_names: tuple[str, str] = ("direction 1 (SD)", "direction 2 (SD)"),
                     size: tuple[float, float] = (6.4, 5.0),
                     trajectory: np.ndarray | None = None, values: np.ndarray | None = None,
                     value_name: str = "") -> tuple[np.ndarray, MapAxes]:
    """A scatter of 2-D latent coordinates coloured by label, or by ``values`` (N,) (e.g. a property of each
    clip) on a colour bar titled ``value_name``, and the geometry to pick points.

    ``trajectory`` (T', 2): the frames of the highlighted clip of a temporal model, drawn as a line from
    a dot at its first frame; the axes keep the limits of the clips, so the geometry does not change.

    An image rather than Gradio's native ``ScatterPlot``: the native plot's select event reports an
    x-range brush, not a point, while a click on an image gives its pixel, which :class:`MapAxes`
    maps back to the nearest clip.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) != len(labels) or (values is not None and len(values) != len(xy)):
        raise ValueError(f"{len(xy)} points but {len(labels)} labels"
                         + (f" and {len(values)} values" if values is not None else ""))
    fig, ax = _map_figure(xy, labels, highlight, title, axis_names, size, trajectory, values, value_name)
    img = _rgb(fig)  # draws, so the layout (and the axes box) is final
    bb = ax.get_window_extent()
    h, w = img.shape[:2]
    geom = MapAxes(w, h, float(bb.x0), float(bb.x1), float(h - bb.y1), float(h - bb.y0),
                   tuple(map(float, ax.get_xlim())), tuple(map(float, ax.get_ylim())))
    return img, geom


LOSS_METRICS = {"loss": "total loss", "recon": "reconstruction (per-pixel MSE)", "kl": "KL divergence (nats)"}


def loss_frames(history: Sequence[dict[str, Any]], current: dict[str, Any] | None = None) -> dict[str, Any]:
    """Loss curves as one pandas DataFrame per metric ("loss", "recon", "kl") for ``gr.LinePlot``.

    Columns: ``epoch`` (float), ``value``, ``curve`` ("training" / "validation"). ``history`` is
    the training loop's per-epoch list (``{"epoch", "train": {...}, "val": {...}}``); ``current``
    (``{"epoch": fractional epoch, "train": {...}}``) extends the training curve into the epoch
    that is running, so the plot moves between epochs too. Show them with :func:`loss_plot_value`
    and :func:`loss_plot_kwargs`.
    """
    import pandas as pd

    rows: dict[str, list[tuple[float, float, str]]] = {k: [] for k in LOSS_METRICS}
    for h in history:
        for key in LOSS_METRICS:
            if key in h.get("train", {}):
                rows[key].append((float(h["epoch"]), float(h["train"][key]), "training"))
            if h.get("val") and key in h["val"]:
                rows[key].append((float(h["epoch"]), float(h["val"][key]), "validation"))
    if current and current.get("train"):
        for key in LOSS_METRICS:
            if key in current["train"]:
                rows[key].append((float(current["epoch"]), float(current["train"][key]), "training"))
    # explicit dtypes: an empty frame would otherwise be typed "object" and plotted as categories
    return {k: pd.DataFrame(v, columns=["epoch", "value", "curve"]).astype({"epoch": float, "value": float,
                                                                           "curve": str})
            for k, v in rows.items()}


MIN_EPOCH_AXIS = 3  # the shortest epoch axis on which Vega's ticks are whole epochs (see loss_plot_kwargs)


def loss_plot_kwargs(n_epochs: float = 0) -> dict[str, Any]:
    """Keyword arguments for the loss ``gr.LinePlot``s (constructor and ``gr.update``): whole-epoch ticks.

    ``gr.LinePlot`` draws with Vega-Lite, whose ticks on a short axis are 1.0, 1.1, ... An integer
    format (``x_axis_format="d"``) makes Vega-Lite set ``tickMinStep: 1``, but on a domain under ~3
    units the nice step is still 0.5 (labels "1", "2", "2"). So the axis also spans the run's planned
    ``n_epochs`` from 0, and at least :data:`MIN_EPOCH_AXIS`: ticks are then integers at any plot width.
    """
    return {"x_axis_format": "d", "x_lim": [0, max(MIN_EPOCH_AXIS, math.ceil(n_epochs))]}


def loss_plot_value(frame: pd.DataFrame) -> pd.DataFrame | None:
    """``frame`` for ``gr.LinePlot``, or None when it has no rows: the plot then shows its empty
    placeholder, whereas an empty frame makes Vega log "Infinite extent" warnings in the browser."""
    return None if frame.empty else frame


def save_png(rgb: np.ndarray, directory: str | Path, name: str) -> str:
    """Write an RGB image (H, W, 3) as ``directory/<unique>/<name>.png`` and return its path.

    ``gr.Image`` names a download after the file it was given (``orig_name``), and an array is saved
    as ``image.png``; a path gives e.g. ``digits_0_alice_reconstruction.png``. ``name`` is made safe
    for a file name; the unique folder keeps same-named images apart.
    """
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {arr.dtype} {arr.shape}")
    path = Path(directory) / uuid.uuid4().hex[:12] / f"{safe_name(name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, compress_level=1)  # fast; spectrograms are small
    return str(path)


def safe_name(name: str, default: str = "image") -> str:
    """``name`` as a portable file name stem: ASCII letters, digits, "-", "_" and "." only, at most 80 characters."""
    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()  # "Ä" -> "A"
    keep = re.sub(r"[^0-9A-Za-z._-]+", "_", ascii_name).strip("._")[:80].strip("._")
    return keep or default


def progress_html(fraction: float, text: str, state: str = "running") -> str:
    """A progress bar with a caption, as HTML.

    Gradio's own progress bar (``gr.Progress``) belongs to one request: it vanishes on a page
    reload and cannot be shared by a background job, so training draws its own from the job's state.
    """
    pct = max(0.0, min(1.0, float(fraction))) * 100
    colour = {"running": "#f97316", "done": "#16a34a", "stopped": "#64748b", "error": "#dc2626"}.get(state, "#f97316")
    return (
        '<div class="train-progress" style="width:100%">'
        f'<div style="font-size:0.95em;margin-bottom:4px">{html.escape(text)}</div>'
        '<div style="background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden">'
        f'<div style="width:{pct:.1f}%;height:100%;background:{colour};transition:width 0.5s"></div>'
        "</div></div>"
    )
