"""Interactive latency: server-side time of one latent-slider update and of one reconstruction.

Slider update (the Explore tab's path): decode one latent code, turn the spectrogram into sound
(Griffin-Lim with the fast iteration count used while a slider moves, and with the count used
when it is released), render the spectrogram image, encode the audio as 16-bit WAV bytes.
Reconstruction: analyse a clip, encode and decode it, resynthesise (Griffin-Lim, the app's
default iterations), render two spectrogram images (original and reconstruction), encode WAV.
Median and 95th percentile over repeated calls after warm-up, with a per-stage breakdown.

Models: ``checkpoints/digits`` and ``checkpoints/music`` when they exist; otherwise a default-arch
model trained briefly on the fly (latency depends on the architecture and shapes, not on the
weights; the result says which).

    python -m benchmarks.bench_latency [--quick] [--out DIR] [--data DIR]   # from the repository root
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "latency"
MODELS = {"digits": "digits", "music": "music"}  # model name -> preset
FINAL_ITERS = 64  # the app's iterations for a released slider and for reconstructions
MUSIC_EXCERPT_S = 10.0  # seconds of a music track reconstructed in one request
FALLBACK_TRAIN_S = {"digits": 20.0, "music": 20.0}  # training seconds of a stand-in model
QUICK_FALLBACK_TRAIN_S = 3.0


def wav_bytes(wave, sample_rate: int) -> bytes:
    """16-bit PCM WAV in memory."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def train_stand_in(files: list[str] | str, store: str, ckpt: str, preset: str, seconds: float) -> dict[str, Any]:
    """Build a store and train the default arch for ``seconds`` (a stand-in when no checkpoint exists)."""
    from preprocessing.config import preset as get_preset
    from preprocessing.store import build_store

    build_store(files, store, get_preset(preset))
    with common.without_latent_stats() as vt:  # not needed to time decoding
        for _ in vt.train(store, ckpt, arch="default", epochs=10_000, time_limit_s=seconds, preview_every=0):
            pass
    return {"checkpoint": ckpt}


def _timed(stages: dict[str, list[float]], name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    stages.setdefault(name, []).append(time.perf_counter() - t0)
    return out


def latency_case(ckpt: str, audio: str, excerpt_s: float | None, repeats: int, threads: int | None,
                 warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Time slider updates (fast and final iterations) and reconstructions of ``audio``, in ms."""
    import torch

    from preprocessing.audio import load_audio
    from preprocessing.spectrogram import denormalise
    from studio.latent_space import FAST_ITERS
    from studio.plots import spectrogram_image as render
    from vae.checkpoint import load_checkpoint
    from vae.evaluate import joined_db
    from vae.generate import analyse, decode, display_range, reconstruct, to_wave

    if threads:
        torch.set_num_threads(threads)
    ck = load_checkpoint(ckpt)
    cfg = ck.spec
    lo, hi = display_range(ck)
    wave = load_audio(audio, cfg.sample_rate, min_samples=cfg.n_fft)
    if excerpt_s:
        wave = wave[: int(excerpt_s * cfg.sample_rate)]
    codes = torch.randn(warmup + repeats, *ck.model_cfg.latent_shape, generator=torch.Generator().manual_seed(seed))

    def slider(z, n_iter: int, st: dict) -> None:
        x = _timed(st, "decode", decode, ck, z)[0]
        w = _timed(st, "phase", to_wave, ck, x, [(lo, hi)], "griffinlim", n_iter)
        _timed(st, "image", render, denormalise(x, lo, hi).numpy(), cfg, lo, hi, "Moved along the sliders")
        _timed(st, "wav", wav_bytes, w, cfg.sample_rate)

    def reconstruction(st: dict) -> None:
        a = _timed(st, "analyse", analyse, ck, wave)
        x_hat = _timed(st, "encode_decode", reconstruct, ck, a.specs)
        out = _timed(st, "phase", to_wave, ck, x_hat, a.ranges, "griffinlim", FINAL_ITERS)
        x_db, r_db = joined_db(a.specs, a.ranges), joined_db(x_hat, a.ranges)
        vmin, vmax = float(x_db.min()), float(x_db.max())
        _timed(st, "images", lambda: (render(x_db, cfg, vmin, vmax, "Original"),
                                      render(r_db, cfg, vmin, vmax, "Reconstruction")))
        _timed(st, "wav", wav_bytes, out[: a.length] / a.gain, cfg.sample_rate)

    def measure(call, n: int) -> dict[str, Any]:
        for i in range(warmup):
            call(i, {})
        stages: dict[str, list[float]] = {}
        totals = []
        for i in range(warmup, warmup + n):
            t0 = time.perf_counter()
            call(i, stages)
            totals.append(time.perf_counter() - t0)
        return {"total": common.summary_ms(totals),
                "stages_median_ms": {k: round(common.percentile(v, 50) * 1000, 2) for k, v in stages.items()}}

    torch.manual_seed(seed)
    return {
        "threads": torch.get_num_threads(), "renderer": "studio.plots.spectrogram_image (RGB array)",
        "shape": list(cfg.shape),
        "sample_rate": cfg.sample_rate, "arch": ck.meta.get("arch"), "clip_s": round(len(wave) / cfg.sample_rate, 2),
        "windows": len(analyse(ck, wave).specs), "fast_iters": FAST_ITERS, "final_iters": FINAL_ITERS,
        "params_m": round(sum(p.numel() for p in ck.model.parameters()) / 1e6, 2),
        "slider_fast": measure(lambda i, st: slider(codes[i], FAST_ITERS, st), repeats),
        "slider_final": measure(lambda i, st: slider(codes[i], FINAL_ITERS, st), repeats),
        "reconstruction": measure(lambda i, st: reconstruction(st), max(3, repeats // 2)),
    }


def _inputs(data_dir: str | Path) -> dict[str, tuple[str, float | None, list[str] | str]]:
    """model -> (audio file to reconstruct, excerpt seconds, training inputs for a stand-in)."""
    test = common.fsdd_files(data_dir, "test")
    tracks = sorted(p for p in common.music_dir(data_dir).rglob("*") if p.is_file())
    if not test or not tracks:
        raise FileNotFoundError(f"need FSDD test takes and music under {data_dir}")
    fsdd = [str(f) for f in common.spread(common.fsdd_files(data_dir), 150)]
    return {"digits": (str(test[0]), None, fsdd),
            "music": (str(tracks[0]), MUSIC_EXCERPT_S, str(common.music_dir(data_dir)))}


def run(out_dir: str | Path = common.DEFAULT_OUT, data_dir: str | Path = common.DEFAULT_DATA, quick: bool = False,
        *, isolate: bool = True, repeats: int | None = None, checkpoints_dir: str | Path | None = None,
        train_s: float | None = None, thread_counts: tuple[int | None, ...] | None = None) -> dict[str, Any]:
    """Measure both models (digits, music); write latency.{json,md}."""
    import torch

    repeats = repeats or (5 if quick else 30)
    checkpoints_dir = Path(checkpoints_dir or common.ROOT / "checkpoints")
    run_threads = torch.get_num_threads()
    if thread_counts is None:  # this run's setting, and one thread per core (torch's default) if different
        thread_counts = (run_threads,) if quick or run_threads == os.cpu_count() else (run_threads, os.cpu_count())
    res = common.begin(NAME, quick, repeats=repeats, thread_counts=list(thread_counts))
    res["models"] = {}
    for name, preset in MODELS.items():
        audio, excerpt, train_inputs = _inputs(data_dir)[name]
        ckpt = checkpoints_dir / name
        if (ckpt / "config.json").is_file():
            source = f"checkpoints/{name}"
        else:
            seconds = train_s or (QUICK_FALLBACK_TRAIN_S if quick else FALLBACK_TRAIN_S[name])
            ckpt = common.tmp_dir(out_dir, NAME) / f"ckpt_{name}"
            print(f"[latency] {name}: no checkpoint, training a stand-in for {seconds:g} s ...",
                  file=sys.stderr, flush=True)
            common.run_case("benchmarks.bench_latency:train_stand_in",
                            {"files": train_inputs, "store": str(common.tmp_dir(out_dir, NAME) / f"store_{name}"),
                             "ckpt": str(ckpt), "preset": preset, "seconds": seconds}, isolate)
            source = (f"no checkpoints/{name}: default-arch model trained {seconds:g} s on the fly "
                      "(latency depends on the architecture, not the weights)")
        runs = []
        for th in thread_counts:
            print(f"[latency] {name}: {repeats} updates, {th or 'default'} threads ...", file=sys.stderr, flush=True)
            runs.append(common.run_case("benchmarks.bench_latency:latency_case",
                                        {"ckpt": str(ckpt), "audio": audio, "excerpt_s": excerpt,
                                         "repeats": repeats, "threads": th}, isolate))
        res["models"][name] = {"source": source, "audio": Path(audio).name, "runs": runs}
    common.finish(res)
    return common.write_result(out_dir, NAME, res, markdown(res))


def markdown(res: dict[str, Any]) -> str:
    f = common.fmt
    rows, stage_rows = [], []
    for name, m in res["models"].items():
        for r in m["runs"]:
            what = {"slider_fast": f"slider update, Griffin-Lim {r['fast_iters']}",
                    "slider_final": f"slider released, Griffin-Lim {r['final_iters']}",
                    "reconstruction": f"reconstruction of {r['clip_s']} s ({r['windows']} windows), "
                                      f"Griffin-Lim {r['final_iters']}"}
            for key, label in what.items():
                t = r[key]["total"]
                rows.append([name, f"{r['shape'][0]}x{r['shape'][1]}", r["threads"], label, f(t["median_ms"], 0),
                             f(t["p95_ms"], 0), t["n"], f(r["peak_rss_mb"], 0)])
                stage_rows.append([name, r["threads"], key, ", ".join(f"{k} {v:.0f}" for k, v in
                                                                     r[key]["stages_median_ms"].items())])
    sources = "".join(f"- {name}: {m['source']}; reconstructed clip: {m['audio']}\n"
                      for name, m in res["models"].items())
    renderer_name = next(iter(res["models"].values()))["runs"][0]["renderer"]
    return (common.header_md(res, "Interactive latency") + "Models:\n\n" + sources +
            f"\nServer-side time per request (ms), image renderer: {renderer_name}; audio encoded as 16-bit WAV "
            "bytes.\n\n" +
            common.md_table(["model", "shape", "torch threads", "request", "median (ms)", "p95 (ms)", "n",
                             "peak RSS (MB)"], rows) +
            "\nMedian per stage (ms):\n\n" + common.md_table(["model", "threads", "request", "stages"], stage_rows))


if __name__ == "__main__":
    a = common.bench_args(__doc__)
    print(markdown(run(a.out, a.data, a.quick)))
