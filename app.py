"""Sound VAE studio: a Gradio app to build datasets, train, reconstruct and explore sound VAEs.

``python app.py`` serves it on http://127.0.0.1:7860 (``--host``, ``--port``, ``--share``,
``--checkpoint`` to preselect a model, ``--data-dir`` for stores and runs). This file lays out
components and wires events; every callback is a thin call into the library (``preprocessing``
and ``vae``: ``stores``, ``uploads``, ``clips``, ``compare``, ``explore``, ``jobs``, ``plots``,
``workspace``), which is where the logic lives and is tested.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch

from preprocessing import download
from preprocessing.audio import AudioError
from preprocessing.config import ConfigError, SpectrogramConfig, preset
from preprocessing.store import PreprocessError, Store
from preprocessing.stores import (
    APP_PRESETS,
    build_named_store,
    clip_audio,
    clip_choices,
    clip_db,
    example_indices,
    preset_fields,
    spectrogram_config,
    summary_tables,
)
from preprocessing.uploads import UploadError
from vae import explore, plots
from vae.checkpoint import CheckpointError
from vae.clips import from_file, from_store, random_index
from vae.compare import compare
from vae.config import model_config, train_config
from vae.jobs import JobBusy, TrainingJobs, preview_audio
from vae.train import TrainingError, pick_device
from vae.workspace import Workspace

log = logging.getLogger("sound-vae-app")
USER_ERRORS = (AudioError, CheckpointError, ConfigError, PreprocessError, TrainingError, UploadError, JobBusy,
               download.DownloadError, FileExistsError, FileNotFoundError, ValueError)
N_EXAMPLES = 4  # example clips shown after building a store
MAX_UPLOAD = "500mb"  # per file, enforced by Gradio before our own limits (preprocessing.uploads)
# Keep the Explore tab's picture and player in view while the sliders are dragged.
CSS = "#ex-view { position: sticky; top: 8px; align-self: flex-start; }"
PHASES = [("Griffin-Lim (estimates the phase)", "griffinlim"), ("Zero phase (the study's inverse STFT)", "zero")]
SOURCES = [("Example clip", "example"), ("Clip from a store", "store"), ("Random clip from a store", "random"),
           ("Upload or record", "upload")]
STARTS = [("Origin (centre of the prior)", "origin"), ("Random sample from the prior", "prior"),
          ("Example clip", "example"), ("Uploaded / recorded clip", "upload")]
INTRO = """# Sound VAE studio
Turn sound into pictures (spectrograms: time left to right, pitch bottom to top, brighter = louder),
teach a variational autoencoder to squeeze them into a few numbers, and listen to what those numbers mean.
**Dataset** builds training data, **Train** teaches a model, **Reconstruct** compares a clip with the
model's copy, **Explore** lets you move through the model's "space of sounds"."""


def friendly(fn: Callable) -> Callable:
    """Show library errors as readable messages (gr.Error), never as a stack trace in the page."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}: {e}). The server console has details.",
                           print_exception=False) from None

    return wrapper


def dropdown(choices: list[tuple[str, str]], current: str | None, default: str | None = None) -> dict:
    """Refresh a picker's choices, keeping the current selection when it still exists."""
    values = [v for _, v in choices]
    value = current if current in values else (default if default in values else (values[0] if values else None))
    return gr.update(choices=choices, value=value)


class StudioApp:
    """The app's callbacks, over one :class:`Workspace` and one training-job manager."""

    def __init__(self, workspace: Workspace, jobs: TrainingJobs | None = None, checkpoint: str | None = None):
        self.ws = workspace
        self.jobs = jobs or TrainingJobs()
        if checkpoint and not Path(checkpoint, "config.json").is_file():
            log.warning("--checkpoint %s is not a checkpoint folder; ignoring it", checkpoint)
            checkpoint = None
        self.initial_checkpoint = checkpoint or self.ws.default_checkpoint()

    # ------------------------------------------------------------------ pickers

    def checkpoint_choices(self) -> list[tuple[str, str]]:
        found = self.ws.checkpoints()
        if self.initial_checkpoint and self.initial_checkpoint not in [p for _, p in found]:
            found.insert(0, (f"{self.initial_checkpoint} (given)", self.initial_checkpoint))
        return found

    def refresh_dataset(self, current: str | None) -> dict:
        return dropdown(self.ws.stores(), current)

    def refresh_train(self, store: str | None, run: str | None) -> tuple[dict, dict]:
        return dropdown(self.ws.stores(), store), dropdown(self.ws.resumable_runs(), run)

    def refresh_reconstruct(self, ckpt: str | None, store: str | None, example: str | None) -> tuple[dict, dict, dict]:
        return (dropdown(self.checkpoint_choices(), ckpt, self.initial_checkpoint), dropdown(self.ws.stores(), store),
                dropdown(self.ws.examples(), example, self.ws.default_example(ckpt)))

    def refresh_explore(self, ckpt: str | None, example: str | None, map_source: str | None) -> tuple[dict, dict, dict]:
        return (dropdown(self.checkpoint_choices(), ckpt, self.initial_checkpoint),
                dropdown(self.ws.examples(), example, self.ws.default_example(ckpt)),
                dropdown(self.map_sources(), map_source or "", ""))

    def refresh_all(self, ds_view: str | None, tr_store: str | None, tr_run: str | None, rec_ckpt: str | None,
                    rec_store: str | None, rec_example: str | None, ex_ckpt: str | None, ex_example: str | None,
                    map_source: str | None) -> tuple:
        """Every picker at once, on page load: the page's layout was built at start-up, but stores,
        runs and checkpoints may have appeared since."""
        return (self.notes(), self.refresh_dataset(ds_view), *self.refresh_train(tr_store, tr_run),
                *self.refresh_reconstruct(rec_ckpt, rec_store, rec_example),
                *self.refresh_explore(ex_ckpt, ex_example, map_source))

    def map_sources(self) -> list[tuple[str, str]]:
        return [("codes saved with the model", "")] + [(f"store: {n}", p) for n, p in self.ws.stores()]

    def notes(self) -> str:
        missing = self.ws.missing(has_model=bool(self.initial_checkpoint))
        return "\n\n".join(f"ℹ️ {m}" for m in missing)

    # ------------------------------------------------------------------ dataset

    def preset_changed(self, name: str) -> tuple:
        f = preset_fields(name)
        return f["sample_rate"], f["duration"], f["n_fft"], f["hop_length"], f["normalisation"], f["windowing"]

    def build_store(self, source: str, folder: str, files: list[str] | None, name: str, preset_name: str,
                    sample_rate: float, duration: float, n_fft: float, hop: float, normalisation: str,
                    windowing: str, progress: gr.Progress = gr.Progress()) -> tuple:
        cfg = spectrogram_config(preset_name, sample_rate, duration, n_fft, hop, normalisation, windowing)
        if source == "upload" and not files:
            raise UploadError("no files uploaded: choose audio files or a zip of them")
        progress(0, desc="reading audio")

        def report(done: int, total: int, current: str) -> None:
            progress((done, total), desc=f"preprocessing {current[-40:]}", unit="files")

        summary, refused = build_named_store(
            self.ws.stores_dir, name, cfg, folder=folder if source == "folder" else None,
            uploads=(files or []) if source == "upload" else None, uploads_dir=self.ws.uploads_dir, progress=report)
        gr.Info(f"Store {name} is ready: {summary.n_clips} clips")
        return (*self._summary_view(Store(summary.path), refused), *self._store_updates(summary.path))

    def show_store(self, path: str | None) -> tuple:
        if not path:
            return ("Pick a store to see what it holds.", None, None, *([None] * (2 * N_EXAMPLES)))
        return self._summary_view(Store(path), ())

    def _summary_view(self, store: Store, refused: Any) -> tuple:
        head, per_label, skipped = summary_tables(store.summary(), refused)
        head = f"### Store `{store.path.name}`\n{head}"
        images, audio = [], []
        for i in example_indices(store, N_EXAMPLES):
            db, lo, hi = clip_db(store, i)
            c = store.clips[i]
            title = f"{Path(c['source']).name}" + (f" (label {c['label']})" if c["label"] is not None else "")
            images.append(plots.spectrogram_image(db, store.config, lo, hi, title))
            wave, sr, _ = clip_audio(store, i)
            audio.append(self.ws.wav(wave, sr, Path(c["source"]).stem))
        images += [None] * (N_EXAMPLES - len(images))
        audio += [None] * (N_EXAMPLES - len(audio))
        return (head, per_label, skipped or [["(none)", ""]], *images, *audio)

    def _store_updates(self, selected: str) -> tuple:
        stores = self.ws.stores()
        return (dropdown(stores, selected), dropdown(stores, selected), dropdown(stores, selected),
                dropdown(self.map_sources(), None, ""), self.notes())

    def download_fsdd(self, progress: gr.Progress = gr.Progress()) -> tuple:
        def report(done: int, total: int, what: str) -> None:  # total 0: size unknown, no fraction
            progress((done, total) if total else None, desc=what[:60])

        progress(0, desc="downloading FSDD")
        folder = download.download_fsdd(self.ws.data_dir / "downloads" / "fsdd", progress=report)
        summary, refused = build_named_store(self.ws.stores_dir, "fsdd-digits", preset("digits"), folder=folder,
                                             progress=lambda d, t, n: progress((d, t), desc="preprocessing"))
        gr.Info(f"FSDD downloaded and preprocessed: store fsdd-digits with {summary.n_clips} clips")
        return (*self._summary_view(Store(summary.path), refused), *self._store_updates(summary.path))

    # ------------------------------------------------------------------ train

    def arch_defaults(self, arch: str) -> tuple:
        tc = train_config(arch, (128, 96))
        return tc.epochs, tc.batch_size, tc.lr, model_config(arch, (128, 96)).latent_dim, tc.kl_weight

    def start_training(self, store: str | None, arch: str, run_name: str, epochs: float, batch_size: float,
                       lr: float, latent_dim: float, kl_weight: float, device: str) -> str:
        if not store:
            raise PreprocessError("pick a dataset store first (build one in the Dataset tab)")
        pick_device(device)
        name = (run_name or "").strip() or f"{Path(store).name}-{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        output = self.ws.new_run_dir(name)
        state = self.jobs.start(store, output, arch=arch, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                                latent_dim=int(latent_dim), kl_weight=float(kl_weight), device=device)
        gr.Info(f"Training {state.run} started in the background; the rest of the app stays usable.")
        return plots.progress_html(0, state.progress_text())

    def resume_training(self, run: str | None, epochs: float, batch_size: float, lr: float, kl_weight: float,
                        device: str) -> str:
        if not run:
            raise CheckpointError("pick a run to resume (runs that were stopped or finished are listed)")
        pick_device(device)
        state = self.jobs.resume(run, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                                 kl_weight=float(kl_weight), device=device)
        gr.Info(f"Resuming {state.run}")
        return plots.progress_html(0, state.progress_text())

    def stop_training(self) -> None:
        if self.jobs.stop():
            gr.Info("Stopping: the job saves a checkpoint after the current step; Resume continues from it.")
        else:
            gr.Warning("No training job is running.")

    def poll_training(self, seen: int, seen_preview: int) -> tuple:
        """Everything the Train tab shows about the job; ``gr.skip()`` for what has not changed."""
        s = self.jobs.snapshot()
        if s.version == seen and seen >= 0:
            return (gr.skip(),) * 10
        frames = plots.loss_frames(s.history, s.current)
        state = {"running": "running", "stopping": "running"}.get(s.status, s.status)
        out: list[Any] = [plots.progress_html(s.fraction, s.progress_text(), state),
                          frames["loss"], frames["recon"], frames["kl"]]
        if s.preview and s.preview_version != seen_preview:
            o_db, r_db, o_w, r_w, sr = preview_audio(s.preview)
            cfg = SpectrogramConfig.from_dict(s.preview["config"])
            lo, hi = s.preview["lo"], s.preview["hi"]
            out += [plots.spectrogram_image(o_db, cfg, lo, hi, f"validation clip: {Path(s.preview['name']).name}"),
                    self.ws.wav(o_w, sr, "preview_original"),
                    plots.spectrogram_image(r_db, cfg, lo, hi, f"reconstruction after epoch {s.preview['epoch']}"),
                    self.ws.wav(r_w, sr, f"preview_epoch{s.preview['epoch']}")]
        else:
            out += [gr.skip()] * 4
        return (*out, s.version, s.preview_version)

    # ------------------------------------------------------------------ reconstruct

    def source_visibility(self, source: str) -> tuple:
        return (gr.update(visible=source == "example"), gr.update(visible=source in ("store", "random")),
                gr.update(visible=source == "store"), gr.update(visible=source == "upload"))

    def store_clips(self, store: str | None) -> dict:
        if not store:
            return gr.update(choices=[], value=None)
        choices = clip_choices(Store(store))
        return gr.update(choices=choices, value=choices[0][1] if choices else None)

    def reconstruct(self, ckpt: str | None, source: str, example: str | None, store: str | None,
                    clip_index: int | None, upload: str | None, phase: str, n_iter: float) -> tuple:
        ck = self.ws.load(ckpt)
        sr = ck.spec.sample_rate
        if source == "example":
            if not example:
                raise AudioError("(none)", "no example clips: choose another source (upload, record or a store)")
            clip = from_file(example, sr, min_samples=ck.spec.n_fft)
        elif source in ("store", "random"):
            if not store:
                raise PreprocessError("pick a dataset store (or build one in the Dataset tab)")
            st = Store(store)
            if source == "random" or clip_index is None:
                clip_index = random_index(st)
            clip = from_store(st, int(clip_index), sr)
        elif source == "upload":
            clip = from_file(upload, sr, min_samples=ck.spec.n_fft)
        else:
            raise ValueError(f"unknown clip source {source!r}")
        c = compare(ck, clip, phase, int(n_iter))
        info = f"**{clip.name}**" + (f" (label {clip.label})" if clip.label else "") + \
            f", {len(c.original) / sr:.2f} s at {sr} Hz" + (f". Note: {clip.note}" if clip.note else "")
        return (
            plots.spectrogram_image(c.original_db, ck.spec, c.vmin, c.vmax, "Original (as the model sees it)"),
            self.ws.wav(c.original, sr, f"{Path(clip.name).stem}_original"),
            plots.spectrogram_image(c.reconstruction_db, ck.spec, c.vmin, c.vmax, "Reconstruction by the VAE"),
            self.ws.wav(c.reconstruction, sr, f"{Path(clip.name).stem}_reconstruction_{phase}"),
            self.ws.wav(c.phase_only, sr, f"{Path(clip.name).stem}_phase_only_{phase}"),
            c.metrics_markdown(), info,
        )

    def initial_reconstruction(self, ckpt: str | None, example: str | None, phase: str, n_iter: float) -> tuple:
        """On page load: reconstruct the default example when there is a model and an example; else stay empty."""
        if not ckpt or not example:
            return (gr.skip(),) * 7
        try:
            return self.reconstruct(ckpt, "example", example, None, None, None, phase, n_iter)
        except USER_ERRORS as e:
            log.warning("initial reconstruction failed: %s", e)
            return (gr.skip(),) * 7

    # ------------------------------------------------------------------ explore

    def _model(self, ckpt: str | None) -> tuple[Any, Any, str]:
        ck = self.ws.load(ckpt)
        stats = self.ws.latent_stats(ckpt)
        if stats is None:
            return ck, explore.prior_stats(ck.model_cfg.latent_dim), \
                "This checkpoint has no latent statistics (latents.safetensors), so the sliders follow the " \
                "prior's first axes instead of the directions real sounds vary along."
        return ck, stats, ""

    def _slider_updates(self, stats: Any, values: list[float]) -> list[dict]:
        specs = explore.slider_specs(stats)
        out = []
        for k in range(explore.MAX_SLIDERS):
            if k < len(specs):
                out.append(gr.update(visible=True, label=specs[k].label, minimum=specs[k].minimum,
                                     maximum=specs[k].maximum, value=values[k]))
            else:
                out.append(gr.update(visible=False, value=0))
        return out

    def _render(self, ck: Any, z: torch.Tensor, phase: str, n_iter: float, title: str) -> tuple[np.ndarray, str]:
        r = explore.render(ck, z, phase, int(n_iter))
        return (plots.spectrogram_image(r.db, ck.spec, r.vmin, r.vmax, title),
                self.ws.wav(r.wave, ck.spec.sample_rate, "explore"))

    def _go_to(self, ck: Any, stats: Any, z: torch.Tensor, phase: str, n_iter: float, title: str) -> tuple:
        n = len(explore.slider_specs(stats))
        values, residual = explore.to_sliders(stats, z, n)
        values += [0.0] * (explore.MAX_SLIDERS - n)
        z = explore.from_sliders(stats, values[:n], residual)
        img, wav = self._render(ck, z, phase, n_iter, title)
        return (*self._slider_updates(stats, values), residual.tolist(), img, wav)

    def explore_setup(self, ckpt: str | None, phase: str, n_iter: float) -> tuple:
        """A model was picked: its sliders, the interpolation ends, and the origin rendered."""
        if not ckpt:
            return (self.notes() or "Pick a model.", *([gr.skip()] * (explore.MAX_SLIDERS + 5)))
        ck, stats, note = self._model(ckpt)
        specs = explore.slider_specs(stats)
        info = (f"Latent space of **{Path(ckpt).name}**: {ck.model_cfg.latent_dim} numbers per sound. "
                f"The {len(specs)} sliders move along the directions in which its training sounds vary most "
                f"({100 * explore.covered(stats, len(specs)):.0f}% of the variation), in standard deviations. "
                + note)
        ends = explore.endpoint_choices(stats, self.ws.examples())
        a = ends[0][1] if ends else None
        b = ends[1][1] if len(ends) > 1 else a
        return (info, *self._go_to(ck, stats, torch.zeros(ck.model_cfg.latent_dim), phase, n_iter, "Origin"),
                gr.update(choices=ends, value=a), gr.update(choices=ends, value=b))

    def explore_start(self, ckpt: str | None, kind: str, example: str | None, upload: str | None,
                      temperature: float, phase: str, n_iter: float) -> tuple:
        ck, stats, _ = self._model(ckpt)
        clip = None
        if kind in ("example", "upload"):
            path = example if kind == "example" else upload
            clip = from_file(path, ck.spec.sample_rate, min_samples=ck.spec.n_fft)
        z = explore.start_code(ck, "clip" if clip is not None else kind, temperature=float(temperature), clip=clip)
        title = {"origin": "Origin", "prior": f"Prior sample (temperature {float(temperature):g})"}.get(
            kind, f"Starting from {clip.name if clip else ''}")
        return self._go_to(ck, stats, z, phase, n_iter, title)

    def explore_move(self, ckpt: str | None, residual: list[float] | None, *args: Any) -> tuple[np.ndarray, str]:
        """Slider values -> new spectrogram and audio (the latency-critical path)."""
        *values, phase, n_iter = args
        ck, stats, _ = self._model(ckpt)
        n = len(explore.slider_specs(stats))
        res = torch.tensor(residual) if residual else torch.zeros(ck.model_cfg.latent_dim)
        if res.numel() != ck.model_cfg.latent_dim:  # state from another model: start from the mean
            res = torch.zeros(ck.model_cfg.latent_dim)
        z = explore.from_sliders(stats, [float(v) for v in values[:n]], res)
        return self._render(ck, z, phase, n_iter, "Sound at the slider positions")

    def interpolate(self, ckpt: str | None, end_a: str, end_b: str, steps: float, phase: str,
                    n_iter: float) -> tuple:
        ck, stats, _ = self._model(ckpt)
        za = explore.endpoint_code(ck, stats, end_a, seed=1)
        zb = explore.endpoint_code(ck, stats, end_b, seed=2)
        rs = explore.interpolation(ck, za, zb, int(steps), phase, int(n_iter))
        n = len(rs)
        titles = [f"{k + 1}" + (" (A)" if k == 0 else " (B)" if k == n - 1 else "") for k in range(n)]
        strip = plots.strip_image([r.db for r in rs], ck.spec, rs[0].vmin, rs[0].vmax, titles)
        sr = ck.spec.sample_rate
        step_files = [self.ws.wav(r.wave, sr, f"interpolation_step{k + 1}") for k, r in enumerate(rs)]
        whole = self.ws.wav(explore.join_waves([r.wave for r in rs], sr), sr, "interpolation_all_steps")
        return strip, whole, gr.update(maximum=n, value=1, visible=True), step_files[0], step_files

    def interpolation_step(self, files: list[str] | None, step: float) -> str | None:
        if not files:
            raise ValueError("interpolate first")
        k = int(step) - 1
        if not 0 <= k < len(files):
            raise ValueError(f"step {int(step)} does not exist (1..{len(files)})")
        return files[k]

    def draw_map(self, ckpt: str | None, source: str | None) -> tuple:
        ck, stats, _ = self._model(ckpt)
        m = explore.store_map(ck, stats, Store(source)) if source else explore.checkpoint_map(stats)
        img, geom = plots.latent_map_image(m.xy, m.labels, title=f"{len(m.xy)} clips on sliders 1 and 2")
        return img, {"map": m, "axes": geom, "ckpt": ckpt}, "Click a dot to start exploring from that clip."

    def pick_on_map(self, ckpt: str | None, state: dict | None, phase: str, n_iter: float,
                    evt: gr.SelectData) -> tuple:
        if not state or state.get("ckpt") != ckpt:
            raise ValueError("draw the map for this model first")
        m, geom = state["map"], state["axes"]
        px, py = (evt.index or [None, None])[:2]
        i = geom.nearest(m.xy, float(px), float(py)) if px is not None else None
        if i is None:
            gr.Warning("No clip there: click on a dot.")
            return (gr.skip(),) * (explore.MAX_SLIDERS + 6)
        ck, stats, _ = self._model(ckpt)
        name = m.names[i] if i < len(m.names) else f"clip {i}"
        label = m.labels[i] if i < len(m.labels) else None
        moved = self._go_to(ck, stats, m.codes[i], phase, n_iter, f"Picked on the map: {Path(name).name}")
        img, _ = plots.latent_map_image(m.xy, m.labels, highlight=i, title=f"{len(m.xy)} clips on sliders 1 and 2")
        info = f"Picked **{name}**" + (f" (label {label})" if label is not None else "")
        if m.store_indices is not None and m.store:
            st = Store(m.store)
            wave, sr, _ = clip_audio(st, m.store_indices[i])
            original = self.ws.wav(wave, sr, f"{Path(name).stem}_original")
        else:
            original = None
        return (*moved, img, info, original)


# ---------------------------------------------------------------------------- layout


def build_ui(app: StudioApp) -> gr.Blocks:
    """Lay out the four tabs and wire their events to ``app``'s callbacks."""
    ws = app.ws
    ckpts, stores, examples = app.checkpoint_choices(), ws.stores(), ws.examples()
    ckpt0 = app.initial_checkpoint
    example0 = ws.default_example(ckpt0)
    store0 = stores[0][1] if stores else None
    f0 = preset_fields("digits")
    audio_out = {"type": "filepath", "interactive": False, "buttons": ["download"]}
    # spectrogram images carry their own title, so the component label would only cover it
    image_out = {"type": "numpy", "interactive": False, "buttons": ["download", "fullscreen"], "format": "png",
                 "show_label": False}

    def image_audio_pair(left: str, right: str) -> tuple[gr.Image, gr.Audio, gr.Image, gr.Audio]:
        """Two columns side by side, each a spectrogram image over its player."""
        with gr.Row():
            with gr.Column():
                left_img, left_aud = gr.Image(label=left, **image_out), gr.Audio(label=left, **audio_out)
            with gr.Column():
                right_img, right_aud = gr.Image(label=right, **image_out), gr.Audio(label=right, **audio_out)
        return left_img, left_aud, right_img, right_aud

    with gr.Blocks(title="Sound VAE studio", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        notes = gr.Markdown(app.notes(), elem_id="notes")
        with gr.Tabs(selected="reconstruct" if ckpt0 else "dataset"):
            # ---------------------------------------------------------------- Dataset
            with gr.Tab("Dataset", id="dataset") as tab_ds:
                with gr.Row():
                    with gr.Column(scale=2):
                        ds_source = gr.Radio([("Folder on the server", "folder"), ("Upload files or a zip", "upload")],
                                             value="folder", label="Audio source")
                        ds_folder = gr.Textbox(label="Folder on the server", placeholder="/path/to/recordings",
                                               elem_id="ds-folder",
                                               info="Searched recursively. Sub-folder names become labels; "
                                                    "FSDD file names (digit_speaker_take.wav) give digit labels.")
                        ds_files = gr.File(file_count="multiple", file_types=["audio", ".zip"], visible=False,
                                           label="Audio files or a .zip of them")
                        ds_name = gr.Textbox(value="digits", label="Store name",
                                             info="Letters, digits, '_', '.', '-'. Saved under data/stores/.")
                        ds_preset = gr.Radio(list(APP_PRESETS), value="digits", label="Preset",
                                             info="digits: 8 kHz speech clips; music: 22 kHz, 3 s windows")
                        with gr.Accordion("Parameters of the preset (editable)", open=False):
                            with gr.Row():
                                ds_sr = gr.Number(f0["sample_rate"], label="Sample rate (Hz)", precision=0)
                                ds_dur = gr.Number(f0["duration"], label="Clip duration (s)")
                            with gr.Row():
                                ds_nfft = gr.Number(f0["n_fft"], label="Frame (samples, n_fft)", precision=0)
                                ds_hop = gr.Number(f0["hop_length"], label="Hop (samples)", precision=0)
                            ds_norm = gr.Radio(["global", "clip"], value=f0["normalisation"], label="Normalisation",
                                               info="global: one loudness scale for all clips; clip: each clip "
                                                    "stretched to its own range (the study)")
                            ds_win = gr.Radio(["all", "first"], value=f0["windowing"], label="Windowing",
                                              info="all: cut long files into consecutive clips; first: keep "
                                                   "the first clip of each file only")
                        ds_build = gr.Button("Build store", variant="primary")
                        with gr.Accordion("No audio at hand? Download the Free Spoken Digit Dataset", open=False):
                            gr.Markdown("2,500 recordings of spoken digits 0-9 (about 10 MB), preprocessed with "
                                        "the digits preset into the store `fsdd-digits`.")
                            ds_download = gr.Button("Download FSDD")
                    with gr.Column(scale=3):
                        ds_view = gr.Dropdown(stores, value=None, label="Existing stores",
                                              info="Pick one to see its summary")
                        ds_summary = gr.Markdown("Build a store, or pick an existing one, to see what it holds.")
                        ds_labels = gr.Dataframe(headers=["label", "train clips", "test clips", "total"],
                                                 label="Clips per label and split", interactive=False)
                        ds_skipped = gr.Dataframe(headers=["file", "reason"], label="Skipped files",
                                                  interactive=False, wrap=True, max_height=240)
                        gr.Markdown("**Example clips**: each spectrogram with its sound.")
                        ds_imgs, ds_auds = [], []
                        with gr.Row():
                            for k in range(N_EXAMPLES // 2):
                                with gr.Column():
                                    ds_imgs.append(gr.Image(label=f"example {k + 1}", **image_out))
                                    ds_auds.append(gr.Audio(label=f"example {k + 1}", **audio_out))
                        with gr.Row():
                            for k in range(N_EXAMPLES // 2, N_EXAMPLES):
                                with gr.Column():
                                    ds_imgs.append(gr.Image(label=f"example {k + 1}", **image_out))
                                    ds_auds.append(gr.Audio(label=f"example {k + 1}", **audio_out))

            # ---------------------------------------------------------------- Train
            with gr.Tab("Train", id="train") as tab_tr:
                with gr.Row():
                    with gr.Column(scale=2):
                        tr_store = gr.Dropdown(stores, value=store0, label="Dataset store")
                        tr_arch = gr.Radio(["default", "study"], value="default", label="Architecture",
                                           info="default: small and fast; study: the original tutorial's")
                        tr_name = gr.Textbox(label="Run name", placeholder="automatic: <store>-<arch>-<time>",
                                             info="Saved under runs/<name>")
                        a0 = app.arch_defaults("default")
                        with gr.Row():
                            tr_epochs = gr.Number(a0[0], label="Epochs", precision=0, minimum=1)
                            tr_batch = gr.Number(a0[1], label="Batch size", precision=0, minimum=1)
                        with gr.Row():
                            tr_lr = gr.Number(a0[2], label="Learning rate")
                            tr_latent = gr.Number(a0[3], label="Latent dimensions", precision=0, minimum=1)
                        with gr.Row():
                            tr_kl = gr.Number(a0[4], label="KL weight (beta)", minimum=0,
                                              info="higher: smoother latent space, blurrier sound")
                            devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
                            tr_device = gr.Dropdown(devices, value="auto", label="Device")
                        with gr.Row():
                            tr_start = gr.Button("Start", variant="primary")
                            tr_stop = gr.Button("Stop", variant="stop")
                        with gr.Row():
                            tr_runs = gr.Dropdown(ws.resumable_runs(), value=None, label="Run to resume", scale=3)
                            tr_resume = gr.Button("Resume", scale=1)
                    with gr.Column(scale=3):
                        tr_progress = gr.HTML(plots.progress_html(0, "No training job yet."))
                        empty = plots.loss_frames([])
                        plot_args = {"x": "epoch", "y": "value", "color": "curve", "x_title": "epoch", "height": 220}
                        tr_loss = gr.LinePlot(empty["loss"], title="Total loss", y_title="loss", **plot_args)
                        with gr.Row():
                            tr_recon = gr.LinePlot(empty["recon"], title="Reconstruction error",
                                                   y_title="per-pixel MSE", **plot_args)
                            tr_klp = gr.LinePlot(empty["kl"], title="KL divergence", y_title="nats", **plot_args)
                        gr.Markdown("**Preview**: one validation clip and its reconstruction, every few epochs.")
                        tr_prev_img, tr_prev_aud, tr_prev_rimg, tr_prev_raud = image_audio_pair(
                            "validation clip", "reconstruction")
                tr_seen, tr_seen_prev = gr.State(-1), gr.State(-1)
                # Polling (not a streaming generator): the job outlives any one request, so a reloaded
                # page re-attaches by reading the manager's state on the next tick.
                tr_timer = gr.Timer(1.0)

            # ---------------------------------------------------------------- Reconstruct
            with gr.Tab("Reconstruct", id="reconstruct") as tab_rec:
                with gr.Row():
                    rec_ckpt = gr.Dropdown(ckpts, value=ckpt0, label="Model (checkpoint)", scale=3)
                with gr.Row():
                    with gr.Column(scale=2):
                        rec_source = gr.Radio(SOURCES, value="example" if examples else "upload", label="Clip")
                        rec_example = gr.Dropdown(examples, value=example0, label="Example clip",
                                                  visible=bool(examples))
                        rec_store = gr.Dropdown(stores, value=store0, label="Store", visible=False)
                        rec_clip = gr.Dropdown([], value=None, label="Clip in the store", visible=False)
                        rec_upload = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                              label="Upload or record a clip", visible=not examples)
                        rec_phase = gr.Radio(PHASES, value="griffinlim", label="Phase method",
                                             info="A spectrogram has no phase; it must be rebuilt to make sound.")
                        rec_iters = gr.Slider(1, 256, value=64, step=1, label="Griffin-Lim iterations",
                                              info="more: cleaner sound, slower")
                        rec_go = gr.Button("Reconstruct", variant="primary")
                    with gr.Column(scale=4):
                        rec_info = gr.Markdown()
                        rec_orig_img, rec_orig_aud, rec_recon_img, rec_recon_aud = image_audio_pair(
                            "original", "reconstruction")
                        rec_metrics = gr.Markdown()
                        with gr.Accordion("Phase method alone (no model)", open=False):
                            rec_phase_only = gr.Audio(label="original spectrogram through the phase method only",
                                                      **audio_out)

            # ---------------------------------------------------------------- Explore
            with gr.Tab("Explore", id="explore") as tab_ex:
                with gr.Row():
                    ex_ckpt = gr.Dropdown(ckpts, value=ckpt0, label="Model (checkpoint)", scale=2)
                    ex_info = gr.Markdown(scale=3)
                with gr.Row():
                    with gr.Column(scale=2):
                        # Sliders first, so the picture (right, kept in view) and the sliders fit one screen.
                        gr.Markdown("**Sliders**: drag to move through the latent space (standard deviations "
                                    "along each direction). The sound updates while you drag.")
                        ex_sliders = [gr.Slider(-explore.RANGE_SD, explore.RANGE_SD, value=0, step=0.05,
                                                label=f"Direction {k + 1}", visible=False,
                                                elem_id=f"ex-slider-{k + 1}") for k in range(explore.MAX_SLIDERS)]
                        with gr.Accordion("Start point: where the sliders start from", open=True):
                            ex_start = gr.Radio(STARTS, value="origin", label="Start from")
                            ex_example = gr.Dropdown(examples, value=example0, label="Example clip")
                            ex_upload = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                                 label="Uploaded / recorded clip")
                            ex_temp = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature",
                                                info="for prior samples: low = typical sounds, high = unusual ones")
                            ex_go = gr.Button("Go to start point", variant="primary")
                        with gr.Accordion("Sound quality", open=False):
                            ex_phase = gr.Radio(PHASES, value="griffinlim", label="Phase method")
                            ex_fast = gr.Slider(1, 64, value=explore.FAST_ITERS, step=1,
                                                label="Griffin-Lim iterations while dragging")
                            ex_final = gr.Slider(1, 256, value=64, step=1,
                                                 label="Griffin-Lim iterations when you let go")
                    with gr.Column(scale=3, elem_id="ex-view"):
                        ex_img = gr.Image(label="decoded spectrogram", elem_id="ex-image", **image_out)
                        ex_aud = gr.Audio(label="decoded sound", elem_id="ex-audio", **audio_out)
                ex_residual = gr.State(None)
                with gr.Accordion("Interpolate between two sounds", open=True):
                    with gr.Row():
                        ex_a = gr.Dropdown([], label="From (A)")
                        ex_b = gr.Dropdown([], label="To (B)")
                        ex_steps = gr.Slider(2, 12, value=7, step=1, label="Steps")
                        ex_interp = gr.Button("Interpolate")
                    ex_strip = gr.Image(label="steps from A to B", **image_out)
                    with gr.Row():
                        ex_seq = gr.Audio(label="all steps, one after another", **audio_out)
                        ex_step = gr.Slider(1, 12, value=1, step=1, label="Listen to step", visible=False)
                        ex_step_aud = gr.Audio(label="the chosen step", **audio_out)
                    ex_step_files = gr.State([])
                with gr.Accordion("Map of the latent space", open=True):
                    with gr.Row():
                        ex_map_src = gr.Dropdown(app.map_sources(), value="", label="Clips to map")
                        ex_map_go = gr.Button("Draw map")
                    ex_map_info = gr.Markdown()
                    with gr.Row():
                        ex_map = gr.Image(label="latent map (click a dot)", type="numpy", interactive=False,
                                          format="png", buttons=["download", "fullscreen"], elem_id="ex-map",
                                          show_label=False)
                        ex_map_orig = gr.Audio(label="the picked clip (from its store)", **audio_out)
                    ex_map_state = gr.State(None)

        # ==================================================================== events
        ds_source.change(lambda s: (gr.update(visible=s == "folder"), gr.update(visible=s == "upload")),
                         ds_source, [ds_folder, ds_files], show_progress="hidden", api_visibility="private")
        ds_preset.change(friendly(app.preset_changed), ds_preset, [ds_sr, ds_dur, ds_nfft, ds_hop, ds_norm, ds_win],
                         api_visibility="private")
        ds_outputs = [ds_summary, ds_labels, ds_skipped, *ds_imgs, *ds_auds, ds_view, tr_store, rec_store, ex_map_src,
                      notes]
        ds_build.click(friendly(app.build_store),
                       [ds_source, ds_folder, ds_files, ds_name, ds_preset, ds_sr, ds_dur, ds_nfft, ds_hop, ds_norm,
                        ds_win], ds_outputs, api_name="build_store", concurrency_id="heavy")
        ds_download.click(friendly(app.download_fsdd), None, ds_outputs, api_name="download_fsdd",
                          concurrency_id="heavy")
        ds_view.input(friendly(app.show_store), ds_view, ds_outputs[:3 + 2 * N_EXAMPLES], api_name="show_store")
        tab_ds.select(friendly(app.refresh_dataset), ds_view, ds_view, show_progress="hidden", queue=False,
                      api_name="refresh_dataset", api_visibility="undocumented")

        tr_arch.change(friendly(app.arch_defaults), tr_arch, [tr_epochs, tr_batch, tr_lr, tr_latent, tr_kl],
                       api_visibility="private")
        tr_start.click(friendly(app.start_training),
                       [tr_store, tr_arch, tr_name, tr_epochs, tr_batch, tr_lr, tr_latent, tr_kl, tr_device],
                       tr_progress, api_name="start_training")
        tr_stop.click(friendly(app.stop_training), None, None, api_name="stop_training")
        tr_resume.click(friendly(app.resume_training), [tr_runs, tr_epochs, tr_batch, tr_lr, tr_kl, tr_device],
                        tr_progress, api_name="resume_training")
        poll_out = [tr_progress, tr_loss, tr_recon, tr_klp, tr_prev_img, tr_prev_aud, tr_prev_rimg, tr_prev_raud,
                    tr_seen, tr_seen_prev]
        tr_timer.tick(friendly(app.poll_training), [tr_seen, tr_seen_prev], poll_out, show_progress="hidden",
                      api_name="train_status", concurrency_limit=None)
        tab_tr.select(friendly(app.refresh_train), [tr_store, tr_runs], [tr_store, tr_runs], show_progress="hidden",
                      queue=False, api_name="refresh_train", api_visibility="undocumented")

        rec_source.change(app.source_visibility, rec_source, [rec_example, rec_store, rec_clip, rec_upload],
                          show_progress="hidden", api_visibility="private")
        rec_source.change(friendly(lambda s, st: app.store_clips(st) if s == "store" else gr.skip()),
                          [rec_source, rec_store], rec_clip, show_progress="hidden", api_visibility="private")
        rec_store.change(friendly(app.store_clips), rec_store, rec_clip, show_progress="hidden",
                         api_name="store_clips", api_visibility="undocumented")
        rec_outputs = [rec_orig_img, rec_orig_aud, rec_recon_img, rec_recon_aud, rec_phase_only, rec_metrics,
                       rec_info]
        rec_go.click(friendly(app.reconstruct),
                     [rec_ckpt, rec_source, rec_example, rec_store, rec_clip, rec_upload, rec_phase, rec_iters],
                     rec_outputs, api_name="reconstruct", concurrency_id="heavy")
        tab_rec.select(friendly(app.refresh_reconstruct), [rec_ckpt, rec_store, rec_example],
                       [rec_ckpt, rec_store, rec_example], show_progress="hidden", queue=False,
                       api_name="refresh_reconstruct", api_visibility="undocumented")

        ex_setup_out = [ex_info, *ex_sliders, ex_residual, ex_img, ex_aud, ex_a, ex_b]
        ex_ckpt.change(friendly(app.explore_setup), [ex_ckpt, ex_phase, ex_final], ex_setup_out,
                       api_name="explore_setup")
        ex_go.click(friendly(app.explore_start),
                    [ex_ckpt, ex_start, ex_example, ex_upload, ex_temp, ex_phase, ex_final],
                    [*ex_sliders, ex_residual, ex_img, ex_aud], api_name="explore_start")
        move_in = [ex_ckpt, ex_residual, *ex_sliders, ex_phase]
        for k, s in enumerate(ex_sliders):
            # While dragging: few Griffin-Lim iterations; "always_last" drops stale intermediate positions.
            s.input(friendly(app.explore_move), [*move_in, ex_fast], [ex_img, ex_aud], show_progress="hidden",
                    trigger_mode="always_last", concurrency_id="explore_move", concurrency_limit=1,
                    api_name="explore_move" if k == 0 else None, api_visibility="public" if k == 0 else "private")
            s.release(friendly(app.explore_move), [*move_in, ex_final], [ex_img, ex_aud], show_progress="hidden",
                      trigger_mode="always_last", concurrency_id="explore_move", concurrency_limit=1,
                      api_name="explore_release" if k == 0 else None,
                      api_visibility="public" if k == 0 else "private")
        ex_interp.click(friendly(app.interpolate), [ex_ckpt, ex_a, ex_b, ex_steps, ex_phase, ex_final],
                        [ex_strip, ex_seq, ex_step, ex_step_aud, ex_step_files], api_name="interpolate")
        ex_step.input(friendly(app.interpolation_step), [ex_step_files, ex_step], ex_step_aud, show_progress="hidden",
                      api_name="interpolation_step")
        ex_map_go.click(friendly(app.draw_map), [ex_ckpt, ex_map_src], [ex_map, ex_map_state, ex_map_info],
                        api_name="draw_map")
        ex_map.select(friendly(app.pick_on_map), [ex_ckpt, ex_map_state, ex_phase, ex_final],
                      [*ex_sliders, ex_residual, ex_img, ex_aud, ex_map, ex_map_info, ex_map_orig],
                      api_visibility="private")
        tab_ex.select(friendly(app.refresh_explore), [ex_ckpt, ex_example, ex_map_src],
                      [ex_ckpt, ex_example, ex_map_src], show_progress="hidden", queue=False,
                      api_name="refresh_explore", api_visibility="undocumented")

        # On load: refresh the pickers, re-attach to a running job, show the default model's reconstruction
        # and latent space.
        pickers = [ds_view, tr_store, tr_runs, rec_ckpt, rec_store, rec_example, ex_ckpt, ex_example, ex_map_src]
        demo.load(friendly(app.refresh_all), pickers, [notes, *pickers], show_progress="hidden",
                  api_visibility="private")
        demo.load(friendly(app.poll_training), [tr_seen, tr_seen_prev], poll_out, show_progress="hidden",
                  api_visibility="private")
        demo.load(friendly(app.initial_reconstruction), [rec_ckpt, rec_example, rec_phase, rec_iters], rec_outputs,
                  api_name="initial_reconstruction", api_visibility="undocumented")
        demo.load(friendly(app.explore_setup), [ex_ckpt, ex_phase, ex_final], ex_setup_out, api_visibility="private")
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the Sound VAE studio (Gradio).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link (opt-in)")
    p.add_argument("--checkpoint", help="checkpoint folder to preselect (default: checkpoints/digits if present)")
    p.add_argument("--data-dir", help="folder for stores, uploads and runs (default: data/ and runs/)")
    p.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="torch intra-op threads (default: half the cores; on a busy 2-core machine 1 thread "
                        "cut the slider update p95 from 662 ms to 46 ms)")
    return p.parse_args(argv)


def create_app(workspace: Workspace, checkpoint: str | None = None,
               jobs: TrainingJobs | None = None) -> tuple[gr.Blocks, StudioApp]:
    """The Blocks and its callbacks for a workspace (used by ``main`` and by tests)."""
    app = StudioApp(workspace, jobs, checkpoint)
    return build_ui(app), app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    root = Path(__file__).resolve().parent
    demo, _ = create_app(Workspace.at(args.data_dir, root), args.checkpoint)
    demo.queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD,
        allowed_paths=[str(root / "examples")], show_error=False, css=CSS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
