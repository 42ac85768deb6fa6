"""Shared helpers for the app tests: a workspace with a tiny trained model, and a live server.

The server is the real Gradio app (``app.create_app``) launched in-process on a free local port,
so tests exercise the same event wiring, queue and serialisation a browser does.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from vae.workspace import Workspace


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_workspace(root: Path, fsdd_dir: Path | None = None, trained_dir: Path | None = None) -> Workspace:
    """A workspace under ``root``: ``trained_dir`` shipped as checkpoints/digits, a few examples."""
    ws = Workspace(root / "data", root / "data" / "runs", root / "checkpoints", root / "examples")
    if trained_dir is not None:
        shutil.copytree(trained_dir, ws.checkpoints_dir / "digits", ignore=shutil.ignore_patterns("last"))
    if fsdd_dir is not None:
        (ws.examples_dir / "digits").mkdir(parents=True)
        for name in ("0_alice_0.wav", "1_bob_1.wav", "2_alice_5.wav"):
            shutil.copyfile(fsdd_dir / name, ws.examples_dir / "digits" / name)
    return ws


def launch(ws: Workspace, checkpoint: str | None = None):
    """Start the app for ``ws`` on a free port; returns (demo, app, url). Close with ``demo.close()``."""
    from app import CSS, create_app

    demo, app = create_app(ws, checkpoint)
    port = free_port()
    demo.queue(default_concurrency_limit=2).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        allowed_paths=[str(ws.examples_dir)], show_error=False, ssr_mode=False, css=CSS,
    )
    return demo, app, f"http://127.0.0.1:{port}/"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float32")
    return data, sr


def wait_for(predicate, timeout: float = 60.0, every: float = 0.2):
    """Poll ``predicate()`` until it returns a truthy value; return it (or raise TimeoutError)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"condition not met within {timeout} s")
