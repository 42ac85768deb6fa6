"""Slider latency of the app's Explore tab: from slider values to new audio and plot.

Server-side time = the app's own callback (``ExploreTab.move``: decode one code, Griffin-Lim with
the drag-time iteration count, draw the spectrogram on the cached figure, write the PNG and WAV)
plus Gradio's post-processing of its outputs (caching both files), measured in process.
Also reported: the same update through the running Gradio server with ``gradio_client`` (round
trip: adds the queue, HTTP and event streaming; output files are not downloaded). Slider positions
follow a random drag.

Model: ``--checkpoint`` or ``checkpoints/digits``; without one, an untrained default-arch model of
the digits preset's shape (128 x 96): latency depends on the architecture and shapes, not on the
weights, and the result says which was used.

    .venv/bin/python -m benchmarks.slider_latency [--checkpoint DIR] [--n 60] [--iters 16] [--no-server]

Prints one JSON line: median, 95th percentile and mean in milliseconds, machine and load.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]

TARGET_P95_MS = 150.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def untrained_digits_checkpoint(folder: Path) -> Path:
    """An untrained default-arch model with the digits preset's spectrogram settings."""
    import torch

    from preprocessing.config import preset
    from vae.checkpoint import save_checkpoint
    from vae.config import model_config, train_config
    from vae.latents import save_latent_stats, stats_from_codes
    from vae.model import VAE

    spec = preset("digits").replace(ref_db=34.0)
    torch.manual_seed(0)
    model = VAE(model_config("default", spec.shape)).eval()
    save_checkpoint(folder, model, spec, train_config("default", spec.shape), {"arch": "default", "epoch": 0})
    codes = torch.randn(300, model.cfg.latent_dim) * torch.linspace(2, 0.2, model.cfg.latent_dim)
    save_latent_stats(folder, stats_from_codes(codes, [str(i % 10) for i in range(300)],
                                               [f"clip{i}" for i in range(300)]))
    return folder


def drag(n: int, n_sliders: int, seed: int = 0) -> list[list[float]]:
    """Slider positions of a drag: one slider at a time moving in small steps."""
    rng = np.random.default_rng(seed)
    pos = np.zeros(n_sliders)
    out = []
    for i in range(n):
        k = (i // 15) % n_sliders
        pos[k] = float(np.clip(pos[k] + rng.normal(0, 0.3), -3, 3))
        out.append([round(float(v), 2) for v in pos])
    return out


def round_trip(demo, ckpt: str, moves: list[list[Any]], iters: int, warmup: int = 5) -> dict[str, float]:
    """The same slider updates through the running server with ``gradio_client`` (queue, HTTP, events)."""
    from gradio_client import Client

    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        client.predict(ckpt, "griffinlim", iters, api_name="/explore_setup")
        rt = []
        for i, move in enumerate(moves):
            t0 = time.perf_counter()
            client.predict(ckpt, *move, api_name="/explore_move")
            if i >= warmup:
                rt.append(time.perf_counter() - t0)
        return common.summary_ms(rt)
    finally:
        demo.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="checkpoint folder (default: checkpoints/digits, else an untrained stand-in)")
    p.add_argument("--n", type=int, default=60, help="slider updates timed (after 5 warm-up calls)")
    p.add_argument("--iters", type=int, default=None, help="Griffin-Lim iterations while dragging (default: the app's)")
    p.add_argument("--phase", default="griffinlim", choices=["griffinlim", "zero"])
    p.add_argument("--no-server", action="store_true", help="time only the in-process callback")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    a = p.parse_args(argv)

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from app import create_app
    from studio.latent_space import FAST_ITERS, slider_specs
    from studio.workspace import Workspace
    from vae.latents import MAX_SLIDERS, prior_stats

    iters = a.iters or FAST_ITERS
    tmp = Path(tempfile.mkdtemp(prefix="slider-latency-"))
    ckpt = Path(a.checkpoint) if a.checkpoint else ROOT / "checkpoints" / "digits"
    model_note = str(ckpt)
    if not (ckpt / "config.json").is_file():
        if a.checkpoint:
            raise SystemExit(f"error: {ckpt} is not a checkpoint folder")
        ckpt = untrained_digits_checkpoint(tmp / "digits")
        model_note = "untrained default-arch digits-shaped stand-in (checkpoints/digits not found)"
    ws = Workspace(tmp / "data", tmp / "runs", tmp / "none", tmp / "none", audio_root=tmp / "audio")
    demo, app = create_app(ws, checkpoint=str(ckpt))
    stats = ws.latent_stats(str(ckpt)) or prior_stats(ws.load(str(ckpt)).model_cfg.latent_shape)
    n_sliders = len(slider_specs(stats))
    residual = np.zeros(ws.load(str(ckpt)).model_cfg.latent_shape).tolist()
    positions = drag(a.n + 5, n_sliders)

    def args(pos: list[float]) -> list[Any]:
        return [*pos, *[0.0] * (MAX_SLIDERS - len(pos)), a.phase, iters]

    ex = app.explore
    times, post, both = [], [], []
    for i, pos in enumerate(positions):
        t0 = time.perf_counter()
        out = ex.move(str(ckpt), residual, *args(pos))
        t1 = time.perf_counter()
        # what the server does with the callback's result: serve the PNG and cache the WAV
        ex.img.postprocess(out[ex.img])
        ex.aud.postprocess(out[ex.aud])
        t2 = time.perf_counter()
        if i >= 5:
            times.append(t1 - t0)
            post.append(t2 - t1)
            both.append(t2 - t0)
    result: dict[str, Any] = {
        "benchmark": "slider_latency", "checkpoint": model_note, "phase": a.phase, "griffinlim_iters": iters,
        "n": a.n, "sliders": n_sliders, "server_side_ms": common.summary_ms(both),
        "callback_ms": common.summary_ms(times),
        "gradio_postprocess_ms": common.summary_ms(post),
    }

    if not a.no_server:
        result["server_round_trip_ms"] = round_trip(demo, str(ckpt), [args(pos) for pos in positions], iters)
    result.update({
        "target_p95_ms": TARGET_P95_MS, "meets_target": result["server_side_ms"]["p95_ms"] < TARGET_P95_MS,
        "machine": common.machine(), "loadavg": common.load_avg(),
    })
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
