"""Dataset tab: audio from a server folder, an upload or FSDD -> a dataset store, and what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from preprocessing import download
from preprocessing.config import preset
from preprocessing.errors import InputError
from preprocessing.store import Store, clip_audio, clip_db
from studio import plots
from studio.context import Studio
from studio.datasets import (
    APP_PRESETS,
    build_named_store,
    example_indices,
    preset_fields,
    spectrogram_config,
    summary_tables,
)
from studio.ui import AUDIO_OUT, IMAGE_OUT, dropdown, friendly

N_EXAMPLES = 4  # example clips shown for a store


class DatasetTab:
    def __init__(self, studio: Studio):
        self.studio = studio
        self.ws = studio.ws

    # ------------------------------------------------------------------ layout and events

    def build(self) -> None:
        stores = self.ws.stores()
        f0 = preset_fields("digits")
        with gr.Tab("Dataset", id="dataset") as self.tab, gr.Row():
            with gr.Column(scale=2):
                self._source_controls()
                with gr.Row():
                    self.name = gr.Textbox(value="digits", label="Store name",
                                           info=f"Letters, digits, '_', '.', '-'. Saved under {self.ws.stores_dir}/.")
                self.preset = gr.Radio(list(APP_PRESETS), value="digits", label="Preset",
                                       info="digits: 8 kHz speech clips; music: 22 kHz, 3 s windows")
                self._parameter_controls(f0)
                self.build_btn = gr.Button("Build store", variant="primary")
                with gr.Accordion("No audio at hand? Download the Free Spoken Digit Dataset", open=False):
                    gr.Markdown("2,500 recordings of spoken digits 0-9 (about 10 MB), preprocessed with "
                                "the digits preset into the store `fsdd-digits`.")
                    self.download_btn = gr.Button("Download FSDD")
            with gr.Column(scale=3):
                self._summary_view(stores)
        self._wire()

    def _source_controls(self) -> None:
        self.source = gr.Radio([("Folder on the server", "folder"), ("Upload files or a zip", "upload")],
                               value="folder", label="Audio source")
        info = ("Searched recursively. Sub-folder names become labels; FSDD file names (digit_speaker_take.wav) "
                "give digit labels." + self._roots_note())
        self.folder = gr.Textbox(label="Folder on the server", placeholder="/path/to/recordings", elem_id="ds-folder",
                                 info=info)
        self.files = gr.File(file_count="multiple", file_types=["audio", ".zip"], visible=False,
                             label="Audio files or a .zip of them")
        self.source.change(lambda s: {self.folder: gr.update(visible=s == "folder"),
                                      self.files: gr.update(visible=s == "upload")},
                           self.source, [self.folder, self.files], show_progress="hidden", api_visibility="private")

    def _roots_note(self) -> str:
        dirs = self.studio.allowed_dirs
        if dirs is None:
            return ""
        return f" Only folders inside {', '.join(str(d) for d in dirs)} (more with python app.py --allow-dir DIR)."

    def _parameter_controls(self, f0: dict[str, Any]) -> None:
        with gr.Accordion("Parameters of the preset (editable)", open=False):
            with gr.Row():
                self.sr = gr.Number(f0["sample_rate"], label="Sample rate (Hz)", precision=0)
                self.dur = gr.Number(f0["duration"], label="Clip duration (s)")
            with gr.Row():
                self.nfft = gr.Number(f0["n_fft"], label="Frame (samples, n_fft)", precision=0)
                self.hop = gr.Number(f0["hop_length"], label="Hop (samples)", precision=0)
            self.norm = gr.Radio(["global", "clip"], value=f0["normalisation"], label="Normalisation",
                                 info="global: one loudness scale for all clips; clip: each clip "
                                      "stretched to its own range (the study)")
            self.win = gr.Radio(["all", "first"], value=f0["windowing"], label="Windowing",
                                info="all: cut long files into consecutive clips; first: keep "
                                     "the first clip of each file only")
        self.params = [self.sr, self.dur, self.nfft, self.hop, self.norm, self.win]
        self.preset.change(friendly(self.preset_changed), self.preset, self.params, api_visibility="private")

    def _summary_view(self, stores: list[tuple[str, str]]) -> None:
        self.view = gr.Dropdown(stores, value=None, label="Existing stores", info="Pick one to see its summary")
        self.summary = gr.Markdown("Build a store, or pick an existing one, to see what it holds.")
        self.labels = gr.Dataframe(headers=["label", "train clips", "test clips", "total"],
                                   label="Clips per label and split", interactive=False)
        # the reason is the long column: give it the room, and wrap it rather than cut it off
        self.skipped = gr.Dataframe(headers=["file", "reason"], label="Skipped files", interactive=False,
                                    wrap=True, max_height=240, column_widths=["30%", "70%"], elem_id="ds-skipped")
        gr.Markdown("**Example clips**: each spectrogram with its sound.")
        self.images, self.audio = [], []
        for row in range(2):
            with gr.Row():
                for k in range(row * N_EXAMPLES // 2, (row + 1) * N_EXAMPLES // 2):
                    with gr.Column():
                        self.images.append(gr.Image(label=f"example {k + 1}", **IMAGE_OUT))
                        self.audio.append(gr.Audio(label=f"example {k + 1}", **AUDIO_OUT))
        self.outputs = [self.summary, self.labels, self.skipped, *self.images, *self.audio, self.view]

    def _wire(self) -> None:
        inputs = [self.source, self.folder, self.files, self.name, self.preset, *self.params]
        self.built = [
            self.build_btn.click(friendly(self.build_store), inputs, self.outputs, api_name="build_store",
                                 concurrency_id="heavy"),
            self.download_btn.click(friendly(self.download_fsdd), None, self.outputs, api_name="download_fsdd",
                                    concurrency_id="heavy"),
        ]
        self.view.input(friendly(self.show_store), self.view, self.outputs[:-1], api_name="show_store")
        self.tab.select(friendly(self.refresh), self.view, self.view, show_progress="hidden", queue=False,
                        api_name="refresh_dataset", api_visibility="undocumented")

    # ------------------------------------------------------------------ callbacks

    def refresh(self, current: str | None) -> dict:
        return dropdown(self.ws.stores(), current)

    def preset_changed(self, name: str) -> dict:
        f = preset_fields(name)
        keys = ("sample_rate", "duration", "n_fft", "hop_length", "normalisation", "windowing")
        return {c: f[k] for c, k in zip(self.params, keys)}

    def build_store(self, source: str, folder: str, files: list[str] | None, name: str, preset_name: str,
                    sample_rate: float, duration: float, n_fft: float, hop: float, normalisation: str,
                    windowing: str, progress: gr.Progress = gr.Progress()) -> dict:
        cfg = spectrogram_config(preset_name, sample_rate, duration, n_fft, hop, normalisation, windowing)
        if source == "upload" and not files:
            raise InputError("no files uploaded: choose audio files or a zip of them")
        progress(0, desc="reading audio")

        def report(done: int, total: int, current: str) -> None:
            progress((done, total), desc=f"preprocessing {current[-40:]}", unit="files")

        summary, refused = build_named_store(
            self.ws.stores_dir, name, cfg, folder=(folder or "") if source == "folder" else None,
            uploads=(files or []) if source == "upload" else None, uploads_dir=self.ws.uploads_dir, progress=report,
            limits=self.studio.upload_limits, allowed_roots=self.studio.allowed_dirs)
        gr.Info(f"Store {name} is ready: {summary.n_clips} clips")
        return self._store_view(Store(summary.path), refused)

    def download_fsdd(self, progress: gr.Progress = gr.Progress()) -> dict:
        def report(done: int, total: int, what: str) -> None:  # total 0: size unknown, no fraction
            progress((done, total) if total else None, desc=what[:60])

        progress(0, desc="downloading FSDD")
        folder = download.download_fsdd(self.ws.data_dir / "downloads" / "fsdd", progress=report)
        summary, refused = build_named_store(self.ws.stores_dir, "fsdd-digits", preset("digits"), folder=folder,
                                             progress=lambda d, t, n: progress((d, t), desc="preprocessing"))
        gr.Info(f"FSDD downloaded and preprocessed: store fsdd-digits with {summary.n_clips} clips")
        return self._store_view(Store(summary.path), refused)

    def show_store(self, path: str | None) -> dict:
        if not path:
            return {self.summary: "Pick a store to see what it holds.", self.labels: None, self.skipped: None,
                    **dict.fromkeys(self.images + self.audio)}
        view = self._store_view(Store(path), ())
        del view[self.view]
        return view

    def _store_view(self, store: Store, refused: Any) -> dict:
        """The summary, per-label counts, skipped files and example clips of ``store``; selects it."""
        head, per_label, skipped = summary_tables(store.summary(), refused)
        out: dict[Any, Any] = {self.summary: f"### Store `{store.path.name}`\n{head}", self.labels: per_label,
                               self.skipped: skipped or [["(none)", ""]],
                               **dict.fromkeys(self.images + self.audio)}
        for k, i in enumerate(example_indices(store, N_EXAMPLES)):
            db, lo, hi = clip_db(store, i)
            c = store.clips[i]
            name = store.clip_name(i)
            title = name + (f" (label {c['label']})" if c["label"] is not None else "")
            stem = f"{store.path.name}_{Path(name).stem}"
            out[self.images[k]] = self.ws.png(plots.spectrogram_image(db, store.config, lo, hi, title), stem)
            wave, sr, _ = clip_audio(store, i)
            out[self.audio[k]] = self.ws.wav(wave, sr, stem)
        out[self.view] = dropdown(self.ws.stores(), str(store.path))
        return out
