"""Sound VAE studio: a Gradio app to build datasets, train, reconstruct and explore sound VAEs.

``python app.py`` serves it on http://127.0.0.1:7860 (``--host``, ``--port``, ``--share``,
``--checkpoint`` to preselect a model, ``--data-dir`` for stores and runs). This file only parses
arguments and assembles the page from ``studio/tabs``; each tab lays out its components and wires
their events, over tested library code in ``studio``, ``vae`` and ``preprocessing``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import gradio as gr
import torch

from studio.context import Studio
from studio.jobs import TrainingJobs
from studio.tabs.dataset import DatasetTab
from studio.tabs.explore import CSS, ExploreTab
from studio.tabs.reconstruct import ReconstructTab
from studio.tabs.train import TrainTab
from studio.ui import friendly, theme
from studio.wording import INTRO
from studio.workspace import Workspace

MAX_UPLOAD = "500mb"  # per file, enforced by Gradio before our own limits (studio.uploads)


class App:
    """The page: shared state, the four tabs (tests call their callbacks directly) and the events
    that span tabs (page load, a new store)."""

    def __init__(self, studio: Studio):
        self.studio, self.ws, self.jobs = studio, studio.ws, studio.jobs
        self.initial_checkpoint = studio.initial_checkpoint
        self.dataset, self.train = DatasetTab(studio), TrainTab(studio)
        self.reconstruct, self.explore = ReconstructTab(studio), ExploreTab(studio)

    def notes(self) -> str:
        return self.studio.notes()

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Sound VAE studio", delete_cache=(3600, 3600)) as demo:
            gr.Markdown(INTRO)
            self.notes_md = gr.Markdown(self.notes(), elem_id="notes")
            with gr.Tabs(selected="reconstruct" if self.initial_checkpoint else "dataset") as self.tabs:
                for tab in (self.dataset, self.train, self.reconstruct, self.explore):
                    tab.build()
            self._wire(demo)
        return demo

    def _wire(self, demo: gr.Blocks) -> None:
        ds, tr, rec, ex = self.dataset, self.train, self.reconstruct, self.explore
        self.store_pickers = [tr.store, rec.store, rec.source, ex.map_src]
        for event in ds.built:
            event.success(friendly(self.stores_changed), self.store_pickers, [*self.store_pickers, self.notes_md],
                          show_progress="hidden", api_visibility="private")
        self.pickers = [ds.view, tr.store, tr.runs, rec.ckpt, rec.store, rec.example, rec.source, ex.ckpt,
                        ex.example, ex.map_src]
        demo.load(friendly(self.page_loaded), self.pickers, [self.notes_md, self.tabs, *self.pickers],
                  show_progress="hidden", queue=False, api_visibility="private")
        demo.load(friendly(tr.poll), [tr.seen, tr.seen_preview], tr.poll_outputs, show_progress="hidden",
                  queue=False, api_visibility="private")  # at once, not behind queued work: re-attach quickly
        demo.load(friendly(rec.initial), [rec.ckpt, rec.example, rec.phase.method, rec.phase.iterations],
                  rec.outputs, api_name="initial_reconstruction", api_visibility="undocumented")
        demo.load(friendly(ex.setup), [ex.ckpt, ex.phase.method, ex.phase.iterations], ex.setup_outputs,
                  api_visibility="private")

    def stores_changed(self, train_store: str | None, rec_store: str | None, rec_source: str | None,
                       map_source: str | None) -> dict:
        """After a store is built: it shows up in every store picker at once (the other pickers stay)."""
        out = {**self.train.refresh(train_store, None), **self.reconstruct.refresh(None, rec_store, None, rec_source),
               **self.explore.refresh(None, None, map_source)}
        return {**{c: out[c] for c in self.store_pickers}, self.notes_md: self.notes()}

    def page_loaded(self, ds_view: str | None, tr_store: str | None, tr_run: str | None, rec_ckpt: str | None,
                    rec_store: str | None, rec_example: str | None, rec_source: str | None, ex_ckpt: str | None,
                    ex_example: str | None, map_source: str | None) -> dict:
        """Pickers as they are now (the layout was built at start-up); a running job brings the page
        to the Train tab."""
        out = {self.notes_md: self.notes(), self.dataset.view: self.dataset.refresh(ds_view),
               **self.train.refresh(tr_store, tr_run),
               **self.reconstruct.refresh(rec_ckpt, rec_store, rec_example, rec_source),
               **self.explore.refresh(ex_ckpt, ex_example, map_source)}
        if self.jobs.snapshot().active:
            out[self.tabs] = gr.Tabs(selected="train")
        return out


def create_app(workspace: Workspace, checkpoint: str | None = None,
               jobs: TrainingJobs | None = None) -> tuple[gr.Blocks, App]:
    """The Blocks and its parts for a workspace (used by ``main`` and by tests)."""
    app = App(Studio(workspace, jobs, checkpoint))
    return app.build(), app


def launch_kwargs(root: Path) -> dict:
    """What ``launch`` needs besides host and port: styling, and the files the page may serve."""
    return {"max_file_size": MAX_UPLOAD, "allowed_paths": [str(root / "examples")], "show_error": False,
            "css": CSS, "theme": theme()}


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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    root = Path(__file__).resolve().parent
    demo, _ = create_app(Workspace.at(args.data_dir, root), args.checkpoint)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share,
                                                   **launch_kwargs(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
