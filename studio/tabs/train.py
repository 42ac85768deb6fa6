"""Train tab: start, stop and resume the background training job, and watch it (progress, loss
curves, a preview reconstruction). The job is its own process and outlives the page and the app: a
reload re-attaches to it, and so does a restarted app (from the run's event log)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from preprocessing.config import preset
from preprocessing.errors import InputError, UserError
from preprocessing.store import Store
from studio import plots
from studio.context import Studio
from studio.jobs import JobState, preview_audio, run_progress
from studio.train_process import torchrun_available
from studio.ui import dropdown, friendly, image_audio_pair
from vae.config import ARCHS, arch_for, model_config, train_config

PLOT_ARGS = {"x": "epoch", "y": "value", "color": "curve", "x_title": "epoch", "height": 220}


def arch_defaults(arch: str, store: str | None) -> dict[str, Any]:
    """The architecture's defaults for the picked store's spectrogram size (the digits preset's when
    no store is picked, or it cannot be read: starting a run on it says why)."""
    try:
        shape = Store(store).config.shape if store else preset("digits").shape
    except UserError:
        shape = preset("digits").shape
    tc, mc = train_config(arch, shape), model_config(arch, shape)
    return {"epochs": tc.epochs, "batch": tc.batch_size, "lr": tc.lr, "latent": mc.latent_dim, "kl": tc.kl_weight}


def store_arch(store: str | None) -> str:
    """The architecture a store's preset measured best with (vae.config.arch_for); digits' with no store
    (or one that cannot be read: picking it says why)."""
    try:
        return arch_for(Store(store).config if store else preset("digits"))
    except UserError:
        return arch_for(preset("digits"))


class TrainTab:
    def __init__(self, studio: Studio):
        self.studio = studio
        self.ws = studio.ws
        self.jobs = studio.jobs
        self.jobs.attach(self.ws.runs_dir)  # after a restart: a run still training, or the last run's end

    # ------------------------------------------------------------------ layout and events

    def build(self) -> None:
        stores = self.ws.stores()
        with gr.Tab("Train", id="train") as self.tab:
            with gr.Row():
                with gr.Column(scale=2):
                    self.store = gr.Dropdown(stores, value=stores[0][1] if stores else None, label="Dataset store")
                    self.arch = gr.Radio(list(ARCHS), value=store_arch(stores[0][1] if stores else None),
                                         label="Architecture",
                                         info="default: small and fast, one code per clip; study: the original "
                                              "tutorial's; temporal: a sequence of codes along time")
                    self.name = gr.Textbox(label="Run name", placeholder="automatic: <store>-<arch>-<time>",
                                           info=f"Saved under {self.ws.runs_dir}/<name>")
                    self._hyperparameters()
                    with gr.Row():
                        self.start = gr.Button("Start", variant="primary")
                        self.stop = gr.Button("Stop", variant="stop", interactive=False)
                    with gr.Row():
                        self.runs = gr.Dropdown(self.ws.resumable_runs(), value=None, label="Run to resume",
                                                scale=3, info="Picking a run sets Epochs to train it on to")
                        self.resume = gr.Button("Resume", scale=1)
                with gr.Column(scale=3):
                    self._monitor()
            self.seen, self.seen_preview = gr.State(-1), gr.State(-1)
            # Polling (not a streaming generator): the job outlives any one request, so a reloaded
            # page re-attaches by reading the manager's state on the next tick.
            self.timer = gr.Timer(1.0)
        self._wire()

    def _hyperparameters(self) -> None:
        d = arch_defaults(self.arch.value, self.store.value)
        with gr.Row():
            self.epochs = gr.Number(d["epochs"], label="Epochs", precision=0, minimum=1)
            self.batch = gr.Number(d["batch"], label="Batch size", precision=0, minimum=1)
        with gr.Row():
            self.lr = gr.Number(d["lr"], label="Learning rate")
            self.latent = gr.Number(d["latent"], label="Latent dimensions", precision=0, minimum=1,
                                    info="numbers per code (temporal: per code in the sequence)")
        with gr.Row():
            self.kl = gr.Number(d["kl"], label="KL weight (beta)", minimum=0,
                                info="higher: smoother latent space, blurrier sound")
            devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
            self.device = gr.Dropdown(devices, value="auto", label="Device")
        self.condition = gr.Checkbox(False, label="Condition on labels",
                                     info="the model also takes each clip's label (the digit, the style folder), so "
                                          "that Explore and `sample --label` can ask for one (a new run only)")
        # torchrun's processes: DDP, each taking its slice of every batch (vae.distributed)
        self.processes = gr.Number(1, label="Processes (torchrun)", precision=0, minimum=1,
                                   visible=torchrun_available(),
                                   info="more than 1 starts torchrun --nproc_per_node N -m vae train")

    def _monitor(self) -> None:
        # Filled in on page load from the job manager (a job may be running): say nothing wrong meanwhile.
        self.progress = gr.HTML(plots.progress_html(0, "Looking for a training job..."), elem_id="tr-progress")
        # No value until there is a curve: an empty frame makes Vega log warnings, and drawn empty it
        # kept its colours unset, so later lines came out invisible and without a legend.
        kw = {**PLOT_ARGS, **plots.loss_plot_kwargs()}
        self.loss = gr.LinePlot(None, title="Total loss", y_title="loss", elem_id="tr-loss", **kw)
        with gr.Row():
            self.recon = gr.LinePlot(None, title="Reconstruction error", y_title="per-pixel MSE", elem_id="tr-recon",
                                     **kw)
            self.klp = gr.LinePlot(None, title="KL divergence", y_title="nats", elem_id="tr-kl", **kw)
        gr.Markdown("**Preview**: one validation clip and its reconstruction, every few epochs.")
        self.prev_img, self.prev_aud, self.prev_rimg, self.prev_raud = image_audio_pair(
            "validation clip", "reconstruction")

    def _wire(self) -> None:
        # a store picks the architecture its preset measured best with (which then sets the defaults)
        self.store.input(friendly(store_arch), self.store, self.arch, show_progress="hidden", api_visibility="private")
        self.arch.change(friendly(self.arch_changed), [self.arch, self.store],
                         [self.epochs, self.batch, self.lr, self.latent, self.kl], api_visibility="private")
        hyper = [self.epochs, self.batch, self.lr, self.kl, self.device, self.processes]
        self.start.click(friendly(self.start_training),
                         [self.store, self.arch, self.name, self.epochs, self.batch, self.lr, self.latent, self.kl,
                          self.device, self.processes, self.condition],
                         self.progress, api_name="start_training")
        self.stop.click(friendly(self.stop_training), None, self.stop, api_name="stop_training")
        self.resume.click(friendly(self.resume_training), [self.runs, *hyper], self.progress,
                          api_name="resume_training")
        self.runs.input(friendly(self.run_picked), self.runs, self.epochs, show_progress="hidden",
                        api_visibility="private")
        self.poll_outputs = [self.progress, self.loss, self.recon, self.klp, self.prev_img, self.prev_aud,
                             self.prev_rimg, self.prev_raud, self.stop, self.seen, self.seen_preview]
        self.timer.tick(friendly(self.poll), [self.seen, self.seen_preview], self.poll_outputs,
                        show_progress="hidden", api_name="train_status", concurrency_limit=None)
        # Plots drawn while the tab was hidden have no size: draw everything again when it is shown.
        self.tab.select(friendly(self.refresh), [self.store, self.runs], [self.store, self.runs],
                        show_progress="hidden", queue=False, api_name="refresh_train", api_visibility="undocumented")
        self.tab.select(friendly(lambda: self.poll(-1, -1)), None, self.poll_outputs, show_progress="hidden",
                        api_visibility="private")

    # ------------------------------------------------------------------ callbacks

    def refresh(self, store: str | None, run: str | None) -> dict:
        return {self.store: dropdown(self.ws.stores(), store), self.runs: dropdown(self.ws.resumable_runs(), run)}

    def arch_changed(self, arch: str, store: str | None) -> dict:
        d = arch_defaults(arch, store)
        return {self.epochs: d["epochs"], self.batch: d["batch"], self.lr: d["lr"], self.latent: d["latent"],
                self.kl: d["kl"]}

    def start_training(self, store: str | None, arch: str, run_name: str, epochs: float, batch_size: float,
                       lr: float, latent_dim: float, kl_weight: float, device: str, processes: float = 1,
                       condition: bool = False) -> str:
        if not store:
            raise InputError("pick a dataset store first (build one in the Dataset tab)")
        name = (run_name or "").strip() or f"{Path(store).name}-{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        output = self.ws.new_run_dir(name)
        state = self.jobs.start(store, output, arch=arch, processes=int(processes or 1), epochs=int(epochs),
                                batch_size=int(batch_size), lr=float(lr), latent_dim=int(latent_dim),
                                kl_weight=float(kl_weight), device=device, condition="label" if condition else None)
        gr.Info(f"Training {state.run} started in the background; the rest of the app stays usable.")
        return plots.progress_html(state.fraction, state.progress_text())

    def resume_training(self, run: str | None, epochs: float, batch_size: float, lr: float, kl_weight: float,
                        device: str, processes: float = 1) -> str:
        if not run:
            raise InputError("pick a run to resume (runs that were stopped or finished are listed)")
        state = self.jobs.resume(run, processes=int(processes or 1), epochs=int(epochs), batch_size=int(batch_size),
                                 lr=float(lr), kl_weight=float(kl_weight), device=device)
        gr.Info(state.message)
        return plots.progress_html(state.fraction, state.progress_text())

    def run_picked(self, run: str | None) -> dict:
        """Epochs for a picked run: its planned total, or one more than it has done when it is complete."""
        if not run:
            return gr.skip()
        done, total = run_progress(run)
        return gr.update(value=total if total > done else done + 1)

    def stop_training(self) -> dict:
        if self.jobs.stop():
            gr.Info("Stopping: the job saves a checkpoint after the current step; Resume continues from it.")
        else:
            gr.Warning("No training job is running.")
        return gr.update(interactive=False)

    def poll(self, seen: int, seen_preview: int) -> dict:
        """Everything the tab shows about the job; only what changed since ``seen`` (a version number)."""
        s = self.jobs.snapshot()
        if s.version == seen and seen >= 0:
            return {self.progress: gr.skip()}  # nothing changed: nothing is sent
        frames = plots.loss_frames(s.history, s.current)
        axis = plots.loss_plot_kwargs(max([s.epochs, *(h["epoch"] for h in s.history)]))
        state = {"running": "running", "stopping": "running"}.get(s.status, s.status)
        out: dict[Any, Any] = {self.progress: plots.progress_html(s.fraction, s.progress_text(), state),
                               **{plot: gr.update(value=plots.loss_plot_value(frames[key]), **axis)
                                  for plot, key in ((self.loss, "loss"), (self.recon, "recon"), (self.klp, "kl"))},
                               self.stop: gr.update(interactive=s.status == "running"),
                               self.seen: s.version, self.seen_preview: s.preview_version}
        if s.preview is not None and s.preview_version != seen_preview:
            out.update(self._preview(s))
        return out

    def _preview(self, s: JobState) -> dict:
        p = s.preview
        o_db, r_db, o_w, r_w, sr = preview_audio(p)
        clip = Path(p.name).stem
        return {
            self.prev_img: self.ws.png(plots.spectrogram_image(o_db, p.config, p.lo, p.hi,
                                                               f"validation clip: {Path(p.name).name}"),
                                       f"{s.run}_{clip}_original"),
            self.prev_aud: self.ws.wav(o_w, sr, f"{s.run}_{clip}_original"),
            self.prev_rimg: self.ws.png(plots.spectrogram_image(r_db, p.config, p.lo, p.hi,
                                                                f"reconstruction after epoch {p.epoch}"),
                                        f"{s.run}_{clip}_epoch{p.epoch}"),
            self.prev_raud: self.ws.wav(r_w, sr, f"{s.run}_{clip}_epoch{p.epoch}"),
        }
