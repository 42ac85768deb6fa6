"""Shared helpers for the app tests: a workspace with a tiny trained model, and a live server.

The server is the real Gradio app (``app.create_app``) launched in-process on a free local port,
so tests exercise the same event wiring, queue and serialisation a browser does.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from studio.workspace import Workspace

LSB = 1.0 / 32768  # one step of the 16-bit WAV files the app serves


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


def launch(ws: Workspace, checkpoint: str | None = None, jobs=None):
    """Start the app for ``ws`` on a free port; returns (demo, app parts, url). Close with ``demo.close()``."""
    from app import create_app, launch_kwargs

    # Gradio's file cache (default /tmp/gradio) names files by their content and is shared by every
    # process: a server closing elsewhere (another test run, mutation testing) deletes the files it
    # made, which may be ours too (403 on download). One private cache per test process.
    if "GRADIO_TEMP_DIR" not in os.environ:
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="gradio-tests-")
        atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)
    demo, app = create_app(ws, checkpoint, jobs)
    port = free_port()
    kwargs = {**launch_kwargs(ws.examples_dir.parent), "allowed_paths": [str(ws.examples_dir)]}
    demo.queue(default_concurrency_limit=2).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False, **kwargs)
    return demo, app, f"http://127.0.0.1:{port}/"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float32")
    return data, sr


def slider_code(stats, values, residual) -> torch.Tensor:
    """The code slider ``values`` stand for, written out term by term (independent of
    ``vae.latents.from_sliders``): mean + residual + sum over k of values[k] * sd[k] * direction[k]."""
    z = stats.mean.clone() + torch.as_tensor(residual, dtype=torch.float32).reshape(-1)
    for k, v in enumerate(values):
        z = z + float(v) * stats.component_sd[k] * stats.components[k]
    return z


def spy_render(monkeypatch) -> tuple[list, object]:
    """Record every code the Explore tab decodes (``vae.generate.render`` still runs). Returns (codes,
    the real render)."""
    from studio.tabs import explore
    from vae import generate

    codes: list[torch.Tensor] = []
    real = generate.render

    def render(ck, z, *args, **kwargs):
        codes.append(torch.as_tensor(z, dtype=torch.float32).reshape(-1).clone())
        return real(ck, z, *args, **kwargs)

    monkeypatch.setattr(explore, "render", render)
    return codes, real


def assert_same_sound(served: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """``served`` (read back from a 16-bit WAV) is ``expected`` up to the file's rounding."""
    expected = np.clip(np.asarray(expected, dtype=np.float32), -1.0, 1.0)
    assert served.shape == expected.shape, what
    err = float(np.abs(served - expected).max())
    assert err <= 1.5 * LSB, f"{what}: differs by {err / LSB:.1f} LSB"


def wait_for(predicate, timeout: float = 60.0, every: float = 0.2):
    """Poll ``predicate()`` until it returns a truthy value; return it (or raise TimeoutError)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"condition not met within {timeout} s")
