"""Explore tab: sliders through the latent space, start points, interpolation, and a clickable map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import torch

from preprocessing.audio import join_waves
from preprocessing.errors import InputError
from preprocessing.store import Store, clip_audio
from studio import plots
from studio.clips import from_file
from studio.context import Studio
from studio.latent_space import (
    COLOUR_BY_LABEL,
    FAST_ITERS,
    SLIDER_STEP,
    colour_choices,
    endpoint_choices,
    endpoint_code,
    map_colours,
    named_left_out,
    named_sds,
    named_slider_specs,
    slider_specs,
)
from studio.ui import AUDIO_OUT, IMAGE_OUT, PhaseControls, dropdown, example_for, friendly
from studio.wording import explore_caption, named_note, picked_caption
from vae.checkpoint import Checkpoint
from vae.generate import interpolate, render, render_many, start_code
from vae.latents import (
    MAX_SLIDERS,
    RANGE_SD,
    LatentMap,
    LatentStats,
    checkpoint_map,
    from_sliders,
    store_map,
    to_sliders,
    zero_sliders,
)
from vae.onnx_export import export_onnx_zip
from vae.properties import PROPERTIES

MAX_NAMED = len(PROPERTIES)  # named-direction sliders: at most one per property

# Slider moves answered at a time. One, not two: with 20 clients dragging on 2 cores while a job trained,
# the p95 fell from 1.33 s to about 1 s (benchmarks/bench_load.py; RELIABILITY.md), as two renders at once
# only contended with each other and with Gradio's event loop, and the queue drops stale positions anyway.
SLIDER_WORKERS = 1

STARTS = [("Origin (centre of the prior)", "origin"), ("Random sample from the prior", "prior"),
          ("Example clip", "example"), ("Uploaded / recorded clip", "upload")]
# Keep the picture and player in view while the sliders are dragged (the launcher adds it to the page).
CSS = "#ex-view { position: sticky; top: 8px; align-self: flex-start; }"


NO_LABEL = [("no label", "")]  # the label picker's choices for a model without labels


def _label(ck: Checkpoint, label: str | None) -> str | None:
    """The picked label for a conditional model (None: none picked, or a model without labels)."""
    return label if label and ck.model_cfg.labels else None


class ExploreTab:
    def __init__(self, studio: Studio):
        self.studio = studio
        self.ws = studio.ws

    # ------------------------------------------------------------------ layout and events

    def build(self) -> None:
        ckpt0 = self.studio.initial_checkpoint
        with gr.Tab("Explore", id="explore") as self.tab:
            with gr.Row():
                self.ckpt = gr.Dropdown(self.studio.checkpoint_choices(), value=ckpt0, label="Model (checkpoint)",
                                        scale=2)
                self.info = gr.Markdown(scale=3)
            with gr.Row():
                with gr.Column(scale=2):
                    self._sliders_and_start(ckpt0)
                with gr.Column(scale=3, elem_id="ex-view"):
                    self.img = gr.Image(label="decoded spectrogram", elem_id="ex-image", **IMAGE_OUT)
                    self.aud = gr.Audio(label="decoded sound", elem_id="ex-audio", **AUDIO_OUT)
            self.residual = gr.State(None)
            # the named sliders last: the API's outputs of explore_start keep their positions
            self.view = [*self.sliders, self.residual, self.img, self.aud, self.named_note, *self.named]
            self._interpolation()
            self._map()
            self._export()
        self._wire_sliders()

    def _sliders_and_start(self, ckpt0: str | None) -> None:
        # Sliders first, so the picture (right, kept in view) and the sliders fit one screen.
        gr.Markdown("**Sliders**: drag to move through the latent space (standard deviations "
                    "along each direction). The sound updates while you drag.")
        self.sliders = [gr.Slider(-RANGE_SD, RANGE_SD, value=0, step=SLIDER_STEP, label=f"Direction {k + 1}",
                                  visible=False, elem_id=f"ex-slider-{k + 1}") for k in range(MAX_SLIDERS)]
        self.named_note = gr.Markdown(visible=False, elem_id="ex-named-note")
        self.named = [gr.Slider(-1, 1, value=0, step=0.01, label=f"Named direction {k + 1}", visible=False,
                                elem_id=f"ex-named-{k + 1}") for k in range(MAX_NAMED)]
        with gr.Accordion("Start point: where the sliders start from", open=True):
            self.start = gr.Radio(STARTS, value="origin", label="Start from")
            # a conditional model's label (issue #14): held while the sliders move and along an interpolation;
            # changing it replays the same code as another label (the same voice saying another digit)
            # (its "" choice gives the API a default, so calls made for models without labels need not send one)
            self.label = gr.Dropdown(NO_LABEL, value="", label="Label", visible=False, elem_id="ex-label",
                                     info="held while the sliders move; change it to hear the same sound as "
                                          "another label (a start clip is read as this label)")
            self.example = gr.Dropdown(self.ws.examples(), value=self.ws.default_example(ckpt0), label="Example clip")
            self.upload = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Uploaded / recorded clip")
            self.temp = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                  info="for prior samples: low = typical sounds, high = unusual ones")
            self.go = gr.Button("Go to start point", variant="primary")
        with gr.Accordion("Sound quality", open=False):
            self.phase = PhaseControls("ex", label="Griffin-Lim iterations when you let go")
            self.fast = gr.Slider(1, 64, value=FAST_ITERS, step=1, label="Griffin-Lim iterations while dragging")
            self.phase.add_iterations(self.fast)

    def _interpolation(self) -> None:
        with gr.Accordion("Interpolate between two sounds", open=True):
            with gr.Row():
                self.end_a = gr.Dropdown([], label="From (A)")
                self.end_b = gr.Dropdown([], label="To (B)")
                self.steps = gr.Slider(2, 12, value=7, step=1, label="Steps")
                interp = gr.Button("Interpolate")
            self.strip = gr.Image(label="steps from A to B", **IMAGE_OUT)
            with gr.Row():
                self.seq = gr.Audio(label="all steps, one after another", **AUDIO_OUT)
                self.step = gr.Slider(1, 12, value=1, step=1, label="Listen to step", visible=False)
                self.step_aud = gr.Audio(label="the chosen step", **AUDIO_OUT)
            self.step_files = gr.State([])
        interp.click(friendly(self.interpolate), [self.ckpt, self.end_a, self.end_b, self.steps, self.phase.method,
                                                  self.phase.iterations, self.label],
                     [self.strip, self.seq, self.step, self.step_aud, self.step_files], api_name="interpolate")
        self.step.input(friendly(self.interpolation_step), [self.step_files, self.step], self.step_aud,
                        show_progress="hidden", api_name="interpolation_step")

    def _map(self) -> None:
        with gr.Accordion("Map of the latent space", open=True):
            with gr.Row():
                self.map_src = gr.Dropdown(self.studio.map_sources(), value="", label="Clips to map")
                self.map_colour = gr.Dropdown(colour_choices(), value=COLOUR_BY_LABEL, label="Colour by")
                draw = gr.Button("Draw map")
            with gr.Row():
                with gr.Column(scale=3):
                    self.map = gr.Image(label="latent map (click a dot)", type="filepath", interactive=False,
                                        buttons=["download", "fullscreen"], elem_id="ex-map", show_label=False)
                with gr.Column(scale=2):  # the picked clip right next to the map, not up by the sliders
                    self.map_info = gr.Markdown(elem_id="ex-map-info")
                    self.map_img = gr.Image(label="the picked code, decoded", elem_id="ex-map-image", **IMAGE_OUT)
                    self.map_aud = gr.Audio(label="the picked code, decoded", elem_id="ex-map-audio", **AUDIO_OUT)
                    self.map_orig = gr.Audio(label="the picked clip itself (from its store)", elem_id="ex-map-orig",
                                             **AUDIO_OUT)
            self.map_state = gr.State(None)
        draw.click(friendly(self.draw_map), [self.ckpt, self.map_src, self.map_colour],
                   [self.map, self.map_state, self.map_info], api_name="draw_map")
        self.map_colour.input(friendly(self.draw_map), [self.ckpt, self.map_src, self.map_colour],
                              [self.map, self.map_state, self.map_info], api_visibility="private")
        self.map.select(friendly(self.pick_on_map), [self.ckpt, self.map_state, self.phase.method,
                                                     self.phase.iterations],
                        [*self.view, self.map, self.map_info, self.map_img, self.map_aud, self.map_orig, self.label],
                        api_visibility="private")

    def _export(self) -> None:
        with gr.Accordion("Use this model outside the app (ONNX)", open=False):
            gr.Markdown("The encoder and decoder as ONNX graphs, with `sound_vae.json` (the STFT, the dB range, "
                        "the sliders' directions, a conditional model's labels): for onnxruntime in C++, C#, "
                        "JavaScript, ... The README shows how to decode a code with them. Needs the onnx extra: "
                        "`pip install 'sound-vae[onnx]'`.")
            with gr.Row():
                export = gr.Button("Export as ONNX")
                self.export_file = gr.File(label="ONNX export (zip)", interactive=False, elem_id="ex-onnx")
        export.click(friendly(self.export_onnx), self.ckpt, self.export_file, concurrency_id="heavy",
                     api_name="export_onnx")

    def _wire_sliders(self) -> None:
        self.go.click(friendly(self.start_point), [self.ckpt, self.start, self.example, self.upload, self.temp,
                                                   self.phase.method, self.phase.iterations, self.label],
                      self.view, api_name="explore_start")
        self.setup_outputs = [self.info, *self.view, self.end_a, self.end_b]
        self.ckpt.change(friendly(self.setup), [self.ckpt, self.phase.method, self.phase.iterations],
                         self.setup_outputs, api_name="explore_setup")
        self.ckpt.input(friendly(lambda ck, ex: example_for(self.ws, ck, ex)), [self.ckpt, self.example], self.example,
                        show_progress="hidden", api_visibility="private")
        self.ckpt.change(friendly(self.label_choices), [self.ckpt, self.label], self.label, show_progress="hidden",
                         api_visibility="private")
        move_in = [self.ckpt, self.residual, *self.sliders, self.phase.method]
        # another label: the same code replayed (not in the sliders' worker group: a pick, not a drag)
        self.label.input(friendly(self.move), [*move_in, self.phase.iterations, *self.named, self.label],
                         [self.img, self.aud], show_progress="hidden", api_visibility="private")
        for k, s in enumerate([*self.sliders, *self.named]):
            # While dragging: few Griffin-Lim iterations; "always_last" drops stale intermediate positions.
            # The named sliders' values come last, so API calls with the principal sliders alone still fit.
            api = {"api_visibility": "public" if k == 0 else "private"}
            s.input(friendly(self.move), [*move_in, self.fast, *self.named, self.label], [self.img, self.aud],
                    show_progress="hidden", trigger_mode="always_last", concurrency_id="explore_move",
                    concurrency_limit=SLIDER_WORKERS, api_name="explore_move" if k == 0 else None, **api)
            s.release(friendly(self.move), [*move_in, self.phase.iterations, *self.named, self.label],
                      [self.img, self.aud],
                      show_progress="hidden", trigger_mode="always_last", concurrency_id="explore_move",
                      concurrency_limit=SLIDER_WORKERS, api_name="explore_release" if k == 0 else None, **api)
        self.tab.select(friendly(self.refresh), [self.ckpt, self.example, self.map_src],
                        [self.ckpt, self.example, self.map_src], show_progress="hidden", queue=False,
                        api_name="refresh_explore", api_visibility="undocumented")

    # ------------------------------------------------------------------ callbacks: sliders

    def refresh(self, ckpt: str | None, example: str | None, map_source: str | None) -> dict:
        return {self.ckpt: dropdown(self.studio.checkpoint_choices(), ckpt, self.studio.initial_checkpoint),
                self.example: dropdown(self.ws.examples(), example, self.ws.default_example(ckpt)),
                self.map_src: dropdown(self.studio.map_sources(), map_source or "", "")}

    def setup(self, ckpt: str | None, phase: str, n_iter: float) -> dict:
        """A model was picked: its sliders, the interpolation ends, and the origin rendered."""
        if not ckpt:
            return {self.info: self.studio.notes() or "Pick a model."}
        ck, stats, note = self.studio.model(ckpt)
        n = len(slider_specs(stats))
        ends = endpoint_choices(stats, self.ws.examples())
        a = ends[0][1] if ends else None
        b = ends[1][1] if len(ends) > 1 else a
        return {self.info: explore_caption(ckpt, ck.model_cfg.latent_shape, n, stats.covered(n), note,
                                           learned_prior=ck.prior is not None),
                **self._go_to(ck, stats, torch.zeros(ck.model_cfg.latent_shape), phase, n_iter, "Origin", origin=True),
                self.end_a: gr.update(choices=ends, value=a), self.end_b: gr.update(choices=ends, value=b)}

    def label_choices(self, ckpt: str | None, current: str | None) -> dict:
        """The label picker for a model: its labels (the current one kept when it has it), hidden without."""
        labels = list(self.studio.model(ckpt)[0].model_cfg.labels) if ckpt else []
        if not labels:
            return {self.label: gr.update(choices=NO_LABEL, value="", visible=False)}
        return {self.label: gr.update(choices=labels, value=current if current in labels else labels[0], visible=True)}

    def start_point(self, ckpt: str | None, kind: str, example: str | None, upload: str | None,
                    temperature: float, phase: str, n_iter: float, label: str | None = None) -> dict:
        ck, stats, _ = self.studio.model(ckpt)
        label = _label(ck, label)
        if kind in ("example", "upload"):
            clip = from_file(example if kind == "example" else upload, ck.spec.sample_rate, min_samples=ck.spec.n_fft)
            z = start_code(ck, "clip", wave=clip.wave, sample_rate=clip.sample_rate, label=label)
            return self._go_to(ck, stats, z, phase, n_iter, f"Starting from {clip.name}", label=label)
        z = start_code(ck, kind, temperature=float(temperature), label=label)
        title = "Origin" if kind == "origin" else f"Prior sample (temperature {float(temperature):g})"
        return self._go_to(ck, stats, z, phase, n_iter, title, origin=kind == "origin", label=label)

    def move(self, ckpt: str | None, residual: list[float] | None, *args: Any) -> dict:
        """Slider values -> new spectrogram and audio (the latency-critical path). ``args``: the MAX_SLIDERS
        principal sliders' values, the phase method, the iterations, then the named sliders' values (optional),
        then a conditional model's label (optional)."""
        values, (phase, n_iter) = args[:MAX_SLIDERS], args[MAX_SLIDERS:MAX_SLIDERS + 2]
        named, label = args[MAX_SLIDERS + 2:MAX_SLIDERS + 2 + MAX_NAMED], args[MAX_SLIDERS + 2 + MAX_NAMED:][:1]
        ck, stats, _ = self.studio.model(ckpt)
        n, m = len(slider_specs(stats)), len(named_slider_specs(stats))
        shape = ck.model_cfg.latent_shape
        res = torch.tensor(residual) if residual else torch.zeros(shape)
        if res.shape != shape:  # state from another model: start from the mean
            res = torch.zeros(shape)
        z = from_sliders(stats, [float(v) for v in values[:n]], res,
                         named_sds(stats, [float(v or 0) for v in named[:m]]))
        label = _label(ck, label[0] if label else None)
        title = "Sound at the slider positions" + (f", label {label}" if label is not None else "")
        img, wav = self._render(ck, z, phase, n_iter, title, label=label)
        return {self.img: img, self.aud: wav}

    def _render(self, ck: Checkpoint, z: torch.Tensor, phase: str, n_iter: float, title: str,
                name: str = "explore", label: str | None = None) -> tuple[str, str]:
        r = render(ck, z, phase, int(n_iter), label=label) if label is not None else render(ck, z, phase, int(n_iter))
        return (self.ws.png(plots.spectrogram_image(r.db, ck.spec, r.vmin, r.vmax, title), name),
                self.ws.wav(r.wave, ck.spec.sample_rate, name))

    def _go_to(self, ck: Checkpoint, stats: LatentStats, z: torch.Tensor, phase: str, n_iter: float, title: str,
               origin: bool = False, label: str | None = None) -> dict:
        """Sliders, residual and rendering for code ``z``; at the origin every slider reads exactly 0."""
        specs = slider_specs(stats)
        n = len(specs)
        values, residual = zero_sliders(stats, z, n) if origin else to_sliders(stats, z, n, step=SLIDER_STEP)
        img, wav = self._render(ck, from_sliders(stats, values, residual), phase, n_iter, title, label=label)
        out: dict[Any, Any] = {self.residual: residual.tolist(), self.img: img, self.aud: wav}
        for k, slider in enumerate(self.sliders):
            if k < n:
                out[slider] = gr.update(visible=True, label=specs[k].label, minimum=specs[k].minimum,
                                        maximum=specs[k].maximum, value=values[k])
            else:
                out[slider] = gr.update(visible=False, value=0)
        named = named_slider_specs(stats)  # they start at 0: the code is where the sliders above put it
        out[self.named_note] = gr.update(visible=bool(named), value=named_note(len(named), named_left_out(stats)))
        for k, slider in enumerate(self.named):
            if k < len(named):
                spec = named[k]
                out[slider] = gr.update(visible=True, label=spec.label, minimum=spec.minimum, maximum=spec.maximum,
                                        step=spec.step, value=0)
            else:
                out[slider] = gr.update(visible=False, value=0)
        return out

    # ------------------------------------------------------------------ callbacks: interpolation

    def interpolate(self, ckpt: str | None, end_a: str, end_b: str, steps: float, phase: str,
                    n_iter: float, label: str | None = None) -> dict:
        """Codes from A to B rendered (a conditional model: all as ``label``, held while the style moves)."""
        ck, stats, _ = self.studio.model(ckpt)
        za, zb = endpoint_code(ck, stats, end_a, seed=1), endpoint_code(ck, stats, end_b, seed=2)
        rs = render_many(ck, interpolate(za, zb, int(steps)), phase, int(n_iter), _label(ck, label))
        n, sr = len(rs), ck.spec.sample_rate
        titles = [f"{k + 1}" + (" (A)" if k == 0 else " (B)" if k == n - 1 else "") for k in range(n)]
        strip = plots.strip_image([r.db for r in rs], ck.spec, rs[0].vmin, rs[0].vmax, titles)
        files = [self.ws.wav(r.wave, sr, f"interpolation_step{k + 1}") for k, r in enumerate(rs)]
        return {self.strip: self.ws.png(strip, "interpolation"),
                self.seq: self.ws.wav(join_waves([r.wave for r in rs], sr), sr, "interpolation_all_steps"),
                self.step: gr.update(maximum=n, value=1, visible=True), self.step_aud: files[0],
                self.step_files: files}

    def interpolation_step(self, files: list[str] | None, step: float) -> str:
        if not files:
            raise InputError("interpolate first")
        k = int(step) - 1
        if not 0 <= k < len(files):
            raise InputError(f"step {int(step)} does not exist (1..{len(files)})")
        return files[k]

    # ------------------------------------------------------------------ callbacks: the map

    def draw_map(self, ckpt: str | None, source: str | None, colour: str | None = COLOUR_BY_LABEL) -> dict:
        ck, stats, _ = self.studio.model(ckpt)
        m = store_map(ck, stats, Store(source)) if source else checkpoint_map(stats)
        colours = map_colours(ck, stats, m, colour or COLOUR_BY_LABEL)
        img, geom = plots.latent_map_image(m.xy, m.labels, title=f"{len(m.xy)} clips on sliders 1 and 2",
                                           **self._colour_kwargs(colours))
        return {self.map: self.ws.png(img, f"latent_map_{Path(ckpt).name}"),
                self.map_state: {"map": m, "axes": geom, "ckpt": ckpt, "colours": colours},
                self.map_info: "Click a dot: the clip's code is decoded here and the sliders move to it."}

    def pick_on_map(self, ckpt: str | None, state: dict | None, phase: str, n_iter: float,
                    evt: gr.SelectData) -> dict:
        if not state or state.get("ckpt") != ckpt:
            raise InputError("draw the map for this model first")
        m, geom = state["map"], state["axes"]
        px, py = (evt.index or [None, None])[:2]
        i = geom.nearest(m.xy, float(px), float(py)) if px is not None else None
        if i is None:
            gr.Warning("No clip near there: click on or next to a dot.")
            return {self.map_info: gr.skip()}  # nothing on the page changes
        ck, stats, _ = self.studio.model(ckpt)
        name = m.names[i] if i < len(m.names) else f"clip {i}"
        # a conditional model's point was encoded with its clip's label: play it as that label, and pick it
        clip_label = m.labels[i] if i < len(m.labels) else None
        label = clip_label if clip_label in ck.model_cfg.labels else None
        out = self._go_to(ck, stats, m.codes[i], phase, n_iter, f"Picked on the map: {Path(name).name}", label=label)
        if label is not None:
            out[self.label] = label
        path = stats.trajectory(m.codes[i]).numpy() if ck.model_cfg.kind == "temporal" else None
        img, _ = plots.latent_map_image(m.xy, m.labels, highlight=i, title=f"{len(m.xy)} clips on sliders 1 and 2",
                                        trajectory=path, **self._colour_kwargs(state.get("colours")))
        has_store = m.store_indices is not None and m.store is not None
        out.update({self.map: self.ws.png(img, f"latent_map_{Path(ckpt).name}"),
                    self.map_info: picked_caption(name, m.labels[i] if i < len(m.labels) else None, has_store),
                    self.map_img: out[self.img], self.map_aud: out[self.aud],
                    self.map_orig: self._original(m, i, name) if has_store else None})
        return out

    def export_onnx(self, ckpt: str | None) -> str:
        """The picked model as a zip of its ONNX export (vae.onnx_export), for download."""
        if not ckpt:
            raise InputError("pick a model first")
        return str(export_onnx_zip(ckpt, self.ws.download_dir()))

    @staticmethod
    def _colour_kwargs(colours: tuple | None) -> dict:
        """latent_map_image's colouring for :func:`map_colours`'s result (None: by label)."""
        return {} if colours is None else {"values": colours[0], "value_name": colours[1]}

    def _original(self, m: LatentMap, i: int, name: str) -> str:
        wave, sr, _ = clip_audio(Store(m.store), m.store_indices[i])
        return self.ws.wav(wave, sr, f"{Path(name).stem}_original")
