"""Gradio pieces every tab uses: error handling, pickers, output components, the phase controls.

The rest of ``studio`` holds no Gradio code except the tab modules, which build on these.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from preprocessing.errors import UserError

from .workspace import Workspace

log = logging.getLogger("sound-vae-app")

PHASES = [("Griffin-Lim (estimates the phase)", "griffinlim"), ("Zero phase (the study's inverse STFT)", "zero")]
# Spectrogram images carry their own title, so a component label would only cover it.
IMAGE_OUT: dict[str, Any] = {"type": "filepath", "interactive": False, "buttons": ["download", "fullscreen"],
                             "show_label": False}
AUDIO_OUT: dict[str, Any] = {"type": "filepath", "interactive": False, "buttons": ["download"]}
# The theme's default web font (loaded from Google Fonts) is missing offline, and its fallback
# renders small capitals oddly ("VᴀE"): use fonts every system has.
FONTS = ["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def theme() -> gr.themes.Base:
    return gr.themes.Default(font=FONTS, font_mono=MONO_FONTS)


def friendly(fn: Callable) -> Callable:
    """Show a :class:`UserError` as its message (a toast); anything else is a bug: log the traceback
    and show a short generic message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("Something went wrong on the server (a bug, not your input). "
                           "The server console has the details.", print_exception=False) from None

    return wrapper


def dropdown(choices: list[tuple[str, Any]], current: Any, default: Any = None) -> dict:
    """Refresh a picker's choices, keeping the current selection when it still exists."""
    values = [v for _, v in choices]
    value = current if current in values else (default if default in values else (values[0] if values else None))
    return gr.update(choices=choices, value=value)


def example_for(ws: Workspace, ckpt: str | None, current: str | None) -> dict:
    """The example-clip picker when a model is picked: the example that suits that model."""
    return dropdown(ws.examples(), ws.default_example(ckpt), current)


def image_audio_pair(left: str, right: str, left_id: str | None = None,
                     right_id: str | None = None) -> tuple[gr.Image, gr.Audio, gr.Image, gr.Audio]:
    """Two columns side by side, each a spectrogram image over its player."""
    with gr.Row():
        with gr.Column():
            left_img = gr.Image(label=left, elem_id=left_id and f"{left_id}-image", **IMAGE_OUT)
            left_aud = gr.Audio(label=left, elem_id=left_id and f"{left_id}-audio", **AUDIO_OUT)
        with gr.Column():
            right_img = gr.Image(label=right, elem_id=right_id and f"{right_id}-image", **IMAGE_OUT)
            right_aud = gr.Audio(label=right, elem_id=right_id and f"{right_id}-audio", **AUDIO_OUT)
    return left_img, left_aud, right_img, right_aud


class PhaseControls:
    """The phase method and its Griffin-Lim iterations; the iterations are greyed out under zero phase."""

    def __init__(self, prefix: str, iterations: int = 64, label: str = "Griffin-Lim iterations",
                 info: str | None = None):
        self.method = gr.Radio(PHASES, value="griffinlim", label="Phase method", elem_id=f"{prefix}-phase",
                               info="A spectrogram has no phase; it must be rebuilt to make sound.")
        self.iterations = gr.Slider(1, 256, value=iterations, step=1, label=label, elem_id=f"{prefix}-iterations",
                                    info=info or "more: cleaner sound, slower")
        self.extra: list[gr.Slider] = []
        self.method.change(self._toggle, self.method, [self.iterations], show_progress="hidden",
                           api_visibility="private")

    def add_iterations(self, slider: gr.Slider) -> None:
        """Another iterations control that only matters under Griffin-Lim."""
        self.extra.append(slider)
        self.method.change(self._toggle, self.method, [slider], show_progress="hidden", api_visibility="private")

    @staticmethod
    def _toggle(method: str) -> dict:
        return gr.update(interactive=method == "griffinlim")
