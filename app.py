"""Sound VAE studio: a Gradio app to build datasets, train, reconstruct and explore sound VAEs.

``python app.py`` serves it on http://127.0.0.1:7860 (``--host``, ``--port``, ``--share``,
``--checkpoint`` to preselect a model, ``--data-dir`` for stores and runs). This file parses
arguments, decides what may be shared (a password before serving beyond this machine, the folders the
Dataset tab may read, upload limits, a private temporary folder) and assembles the page from
``studio/tabs``; each tab lays out its components and wires their events, over tested library code in
``studio``, ``vae`` and ``preprocessing``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import torch

from studio.context import Studio
from studio.jobs import TrainingJobs
from studio.sharing import (
    AUTH_ENV,
    StartError,
    allowed_dirs,
    check_exposure,
    exit_on_sigterm,
    private_temp_dir,
    read_auth,
)
from studio.tabs.dataset import DatasetTab
from studio.tabs.explore import CSS, ExploreTab
from studio.tabs.reconstruct import ReconstructTab
from studio.tabs.train import TrainTab
from studio.ui import friendly, theme
from studio.uploads import DEFAULT_LIMITS, MB, UploadLimits
from studio.wording import INTRO
from studio.workspace import Workspace

MAX_UPLOAD = "500mb"  # per file, enforced by Gradio before our own limits (studio.uploads)
# The queue: one worker group per kind of work (set per event in studio/tabs: slider moves apart from
# reconstructions and dataset builds), and queue positions sent every few seconds rather than to every
# waiting request each time a job starts (with 20 clients on the sliders that was much of the server's work).
QUEUE = {"default_concurrency_limit": 2, "status_update_rate": 5}
# Gradio's queue rebuilds a pandas summary of up to 10,000 past events after every event (for its
# monitoring page): 2-7 ms of the GIL per slider move, growing as the app runs. Once per 1,000 events
# is plenty for that page. Read when the queue is made, so set here, before any Blocks exists.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")


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
        demo.load(friendly(ex.label_choices), [ex.ckpt, ex.label], ex.label, show_progress="hidden",
                  api_visibility="private")  # a conditional model's label picker (issue #14)

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


def create_app(workspace: Workspace, checkpoint: str | None = None, jobs: TrainingJobs | None = None, *,
               allowed_dirs: Sequence[Path] | None = None,
               upload_limits: UploadLimits = DEFAULT_LIMITS) -> tuple[gr.Blocks, App]:
    """The Blocks and its parts for a workspace (used by ``main`` and by tests). ``allowed_dirs``: the
    server folders the Dataset tab may read (None: any, as for tests; ``main`` always gives them)."""
    app = App(Studio(workspace, jobs, checkpoint, allowed_dirs, upload_limits))
    return app.build(), app


def launch_kwargs(root: Path) -> dict:
    """What ``launch`` needs besides host and port: styling, and the files the page may serve."""
    return {"max_file_size": MAX_UPLOAD, "allowed_paths": [str(root / "examples")], "show_error": False,
            "css": CSS, "theme": theme()}


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return n


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the Sound VAE studio (Gradio).")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only; "
                                                       "any other needs a password or --insecure)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true",
                   help="also create a public gradio.live link (opt-in; needs a password or --insecure)")
    p.add_argument("--auth-file", help="file of user:password lines (one per user): the page asks for one")
    p.add_argument("--insecure", action="store_true",
                   help=f"allow --share or another --host without a password (--auth-file or ${AUTH_ENV})")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a server folder the Dataset tab may read, besides the data folder and examples/ "
                        "(repeatable)")
    p.add_argument("--checkpoint", help="checkpoint folder to preselect (default: checkpoints/digits if present)")
    p.add_argument("--data-dir", help="folder for stores, uploads and runs (default: data/ and runs/)")
    p.add_argument("--upload-limit-mb", type=_positive, default=DEFAULT_LIMITS.max_extracted_bytes // MB,
                   help="disk space one upload may take once zips are extracted (default %(default)s)")
    p.add_argument("--upload-file-limit-mb", type=_positive, default=DEFAULT_LIMITS.max_member_bytes // MB,
                   help="size of one uploaded file or zip member, uncompressed (default %(default)s)")
    p.add_argument("--upload-max-files", type=_positive, default=DEFAULT_LIMITS.max_files,
                   help="audio files in one upload, zip members included (default %(default)s)")
    p.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="torch intra-op threads (default: half the cores; on a busy 2-core machine 1 thread "
                        "cut the slider update p95 from 662 ms to 46 ms)")
    return p.parse_args(argv)


def upload_limits(args: argparse.Namespace) -> UploadLimits:
    return dataclasses.replace(DEFAULT_LIMITS, max_extracted_bytes=args.upload_limit_mb * MB,
                               max_member_bytes=args.upload_file_limit_mb * MB, max_files=args.upload_max_files)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(__file__).resolve().parent
    ws = Workspace.at(args.data_dir, root)
    try:
        auth = read_auth(args.auth_file, os.environ)
        check_exposure(args, auth)
        folders = allowed_dirs(ws, args.allow_dir)
    except StartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    with private_temp_dir() as tmp, exit_on_sigterm():
        ws.audio_root = tmp / "audio"
        demo, _ = create_app(ws, args.checkpoint, allowed_dirs=folders, upload_limits=upload_limits(args))
        demo.queue(**QUEUE).launch(server_name=args.host, server_port=args.port, share=args.share,
                                   auth=auth or None, **launch_kwargs(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
