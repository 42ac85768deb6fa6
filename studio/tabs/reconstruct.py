"""Reconstruct tab: a clip and the model's copy of it, spectrograms side by side with players and figures."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from preprocessing.errors import InputError, UserError
from preprocessing.store import Store
from studio import plots
from studio.clips import Clip, from_file, from_store, random_index
from studio.context import Studio
from studio.datasets import clip_choices
from studio.ui import AUDIO_OUT, PhaseControls, dropdown, example_for, friendly, image_audio_pair
from studio.wording import STALE, clip_caption, metrics_markdown
from vae.evaluate import compare

log = logging.getLogger("sound-vae-app")
EXAMPLE, STORE, RANDOM, UPLOAD = "example", "store", "random", "upload"
SOURCES = [("Example clip", EXAMPLE), ("Clip from a store", STORE), ("Random clip from a store", RANDOM),
           ("Upload or record", UPLOAD)]


def source_choices(has_examples: bool, has_stores: bool) -> list[tuple[str, str]]:
    """The clip sources there is something for: no store sources without a store."""
    return [(label, v) for label, v in SOURCES
            if (v != EXAMPLE or has_examples) and (v not in (STORE, RANDOM) or has_stores)]


class ReconstructTab:
    def __init__(self, studio: Studio):
        self.studio = studio
        self.ws = studio.ws

    # ------------------------------------------------------------------ layout and events

    def build(self) -> None:
        ckpt0, examples, stores = self.studio.initial_checkpoint, self.ws.examples(), self.ws.stores()
        with gr.Tab("Reconstruct", id="reconstruct") as self.tab:
            with gr.Row():
                self.ckpt = gr.Dropdown(self.studio.checkpoint_choices(), value=ckpt0, label="Model (checkpoint)",
                                        scale=3)
            with gr.Row():
                with gr.Column(scale=2):
                    self._inputs(ckpt0, examples, stores)
                with gr.Column(scale=4):
                    self.info = gr.Markdown(elem_id="rec-info")
                    self.orig_img, self.orig_aud, self.recon_img, self.recon_aud = image_audio_pair(
                        "original", "reconstruction", "rec-original", "rec-reconstruction")
                    self.metrics = gr.Markdown(elem_id="rec-metrics")
                    with gr.Accordion("Phase method alone (no model)", open=False):
                        self.phase_only = gr.Audio(label="original spectrogram through the phase method only",
                                                   **AUDIO_OUT)
        self._wire()

    def _inputs(self, ckpt0: str | None, examples: list, stores: list) -> None:
        sources = source_choices(bool(examples), bool(stores))
        first = sources[0][1]
        self.source = gr.Radio(sources, value=first, label="Clip", elem_id="rec-source")
        self.example = gr.Dropdown(examples, value=self.ws.default_example(ckpt0), label="Example clip",
                                   visible=first == EXAMPLE)
        self.store = gr.Dropdown(stores, value=stores[0][1] if stores else None, label="Store", visible=False)
        self.clip = gr.Dropdown([], value=None, label="Clip in the store", visible=False)
        self.upload = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Upload or record a clip",
                               visible=first == UPLOAD)
        self.phase = PhaseControls("rec")
        self.go = gr.Button("Reconstruct", variant="primary")

    def _wire(self) -> None:
        self.source.change(friendly(self.source_visibility), [self.source, self.store],
                           [self.example, self.store, self.clip, self.upload], show_progress="hidden",
                           api_visibility="private")
        # another model: the example that suits it (a music clip for a music model)
        self.ckpt.input(friendly(lambda ck, ex: example_for(self.ws, ck, ex)), [self.ckpt, self.example], self.example,
                        show_progress="hidden", api_visibility="private")
        self.store.change(friendly(self.store_clips), self.store, self.clip, show_progress="hidden",
                          api_name="store_clips", api_visibility="undocumented")
        self.inputs = [self.ckpt, self.source, self.example, self.store, self.clip, self.upload,
                       self.phase.method, self.phase.iterations]
        self.outputs = [self.orig_img, self.orig_aud, self.recon_img, self.recon_aud, self.phase_only, self.metrics,
                        self.info]
        # An error keeps the last good result on screen (and says what went wrong in a toast):
        # progress and error states show on the caption line only.
        self.go.click(friendly(self.reconstruct), self.inputs, self.outputs, api_name="reconstruct",
                      concurrency_id="reconstruct", concurrency_limit=1, show_progress_on=[self.info])
        # A changed setting marks the result on screen as out of date ("input": people's changes only).
        for c in self.inputs:
            c.input(self.mark_stale, self.info, self.info, show_progress="hidden", queue=False,
                    api_visibility="private")
        self.tab.select(friendly(self.refresh), [self.ckpt, self.store, self.example, self.source],
                        [self.ckpt, self.store, self.example, self.source], show_progress="hidden", queue=False,
                        api_name="refresh_reconstruct", api_visibility="undocumented")

    # ------------------------------------------------------------------ callbacks

    def refresh(self, ckpt: str | None, store: str | None, example: str | None, source: str | None) -> dict:
        examples, stores = self.ws.examples(), self.ws.stores()
        return {self.ckpt: dropdown(self.studio.checkpoint_choices(), ckpt, self.studio.initial_checkpoint),
                self.store: dropdown(stores, store),
                self.example: dropdown(examples, example, self.ws.default_example(ckpt)),
                self.source: dropdown(source_choices(bool(examples), bool(stores)), source)}

    def source_visibility(self, source: str, store: str | None) -> dict:
        out = {self.example: gr.update(visible=source == EXAMPLE),
               self.store: gr.update(visible=source in (STORE, RANDOM)),
               self.clip: gr.update(visible=source == STORE), self.upload: gr.update(visible=source == UPLOAD)}
        if source == STORE:
            out[self.clip] = {**self.store_clips(store), "visible": True}
        return out

    def store_clips(self, store: str | None) -> dict:
        if not store:
            return gr.update(choices=[], value=None)
        choices = clip_choices(Store(store))
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    @staticmethod
    def mark_stale(info: str | None) -> str | dict:
        if not info or info.startswith(STALE):
            return gr.skip()
        return f"{STALE}\n\n{info}"

    def _clip(self, source: str, example: str | None, store: str | None, clip_index: int | None,
              upload: str | None, sr: int, n_fft: int) -> Clip:
        if source == EXAMPLE:
            if not example:
                raise InputError("no example clips: choose another source (upload, record or a store)")
            return from_file(example, sr, min_samples=n_fft)
        if source in (STORE, RANDOM):
            if not store:
                raise InputError("pick a dataset store (or build one in the Dataset tab)")
            st = Store(store)
            if source == RANDOM or clip_index is None:
                clip_index = random_index(st)
            return from_store(st, int(clip_index), sr)
        if source == UPLOAD:
            return from_file(upload, sr, min_samples=n_fft)
        raise InputError(f"unknown clip source {source!r}")

    def reconstruct(self, ckpt: str | None, source: str, example: str | None, store: str | None,
                    clip_index: int | None, upload: str | None, phase: str, n_iter: float) -> dict:
        ck = self.ws.load(ckpt)
        sr = ck.spec.sample_rate
        clip = self._clip(source, example, store, clip_index, upload, sr, ck.spec.n_fft)
        c = compare(ck, clip.wave, sr, phase, int(n_iter), clip.name)
        stem = f"{Path(clip.name).stem}_{Path(ckpt).name}"
        return {
            self.orig_img: self.ws.png(plots.spectrogram_image(c.original_db, ck.spec, c.vmin, c.vmax,
                                                               "Original (as the model sees it)"), f"{stem}_original"),
            self.orig_aud: self.ws.wav(c.original, sr, f"{Path(clip.name).stem}_original"),
            self.recon_img: self.ws.png(plots.spectrogram_image(c.reconstruction_db, ck.spec, c.vmin, c.vmax,
                                                                "Reconstruction by the VAE"),
                                        f"{stem}_reconstruction"),
            self.recon_aud: self.ws.wav(c.reconstruction, sr, f"{stem}_reconstruction_{phase}"),
            self.phase_only: self.ws.wav(c.phase_only, sr, f"{Path(clip.name).stem}_phase_only_{phase}"),
            self.metrics: metrics_markdown(c),
            self.info: clip_caption(clip.name, clip.label, len(c.original) / sr, sr, clip.note, ckpt or ""),
        }

    def initial(self, ckpt: str | None, example: str | None, phase: str, n_iter: float) -> dict:
        """On page load: reconstruct the default example when there is a model and an example; else stay empty."""
        if not ckpt or not example:
            return {self.info: gr.skip()}  # (an empty dict would read as one value, not as "no change")
        try:
            return self.reconstruct(ckpt, EXAMPLE, example, None, None, None, phase, n_iter)
        except UserError as e:
            log.warning("initial reconstruction failed: %s", e)
            return {self.info: gr.skip()}
