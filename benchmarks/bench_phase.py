"""Phase estimation: the study's zero-phase inverse STFT against Griffin-Lim at several iterations.

For FSDD test takes (0-4), the ORIGINAL dB spectrogram of each clip (floored at its peak minus
``top_db``, as normalisation does) is turned back into sound with each method, for the
``digits`` and the ``study-digits`` presets. The result, at the input's level, is compared with
the original recording on one fixed STFT (vae.metrics): spectral convergence (0 is identical),
log-spectral distance (dB) and STOI (0..1). STOI needs ~0.4 s of non-silent speech; shorter
clips have none, so it is given both as the mean over the clips that have it and over all clips
joined end to end. Time is the phase estimation and inverse STFT alone, per clip, on CPU.
Griffin-Lim starts from random phase: torch is seeded per clip, so runs repeat exactly.

    python -m benchmarks.bench_phase [--quick] [--out DIR] [--data DIR]   # from the repository root
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "phase"
PRESETS = ("digits", "study-digits")
ITERS = (8, 16, 32, 64, 128)
FULL_CLIPS, QUICK_CLIPS = 100, 12


def methods(iters: tuple[int, ...] = ITERS) -> list[tuple[str, int | None]]:
    return [("zero", None)] + [("griffinlim", n) for n in iters]


def label(phase: str, n_iter: int | None) -> str:
    return "zero phase (study)" if phase == "zero" else f"Griffin-Lim {n_iter}"


def measure_preset(files: list[Path], preset: str, iters: tuple[int, ...] = ITERS) -> list[dict[str, Any]]:
    """One row per method: mean SC, LSD, STOI and time per clip over ``files``."""
    import numpy as np
    import torch

    from preprocessing.audio import fit_length, load_audio, peak, resample
    from preprocessing.config import preset as get_preset
    from preprocessing.spectrogram import log_spectrogram, to_audio
    from vae import metrics

    cfg = get_preset(preset)
    clips = []  # (reference at EVAL_SR, floored dB spectrogram (F, T), gain)
    for f in files:
        wave = load_audio(f, cfg.sample_rate, min_samples=cfg.n_fft)
        gain = 1.0 / peak(wave) if cfg.peak_normalise else 1.0
        db = log_spectrogram(fit_length(wave * gain, cfg.n_samples), cfg)
        clips.append((load_audio(f, metrics.EVAL_SR), db.clamp_min(float(db.max()) - cfg.top_db), gain))
    ms = methods(iters)
    for phase, n_iter in ms:
        to_audio(clips[0][1], cfg, phase, n_iter)  # warm-up: builds and caches the transform
    # clip by clip, every method in turn: a change in machine load touches all methods alike
    acc: dict[int, dict[str, list]] = {m: {k: [] for k in ("sc", "lsd", "stoi", "t", "ref", "est")}
                                       for m in range(len(ms))}
    for i, (ref, db, gain) in enumerate(clips):
        for m, (phase, n_iter) in enumerate(ms):
            torch.manual_seed(i)
            t0 = time.perf_counter()
            est = to_audio(db, cfg, phase, n_iter).numpy()
            a = acc[m]
            a["t"].append(time.perf_counter() - t0)
            est = resample(est / gain, cfg.sample_rate, metrics.EVAL_SR)
            n = min(len(ref), len(est))
            a["ref"].append(ref[:n])
            a["est"].append(est[:n])
            a["sc"].append(metrics.spectral_convergence(ref, est, metrics.EVAL_SR))
            a["lsd"].append(metrics.log_spectral_distance(ref, est, metrics.EVAL_SR))
            a["stoi"].append(metrics.stoi(ref, est, metrics.EVAL_SR))
    rows = []
    for m, (phase, n_iter) in enumerate(ms):
        a = acc[m]
        valid = [s for s in a["stoi"] if math.isfinite(s)]
        joined = metrics.stoi(np.concatenate(a["ref"]), np.concatenate(a["est"]), metrics.EVAL_SR)
        rows.append({
            "method": label(phase, n_iter), "phase": phase, "n_iter": n_iter, "n_clips": len(clips),
            "spectral_convergence": round(float(np.mean(a["sc"])), 4), "lsd_db": round(float(np.mean(a["lsd"])), 3),
            "stoi": round(float(np.mean(valid)), 4) if valid else float("nan"), "stoi_clips": len(valid),
            "stoi_joined": round(joined, 4), "time_ms": common.summary_ms(a["t"]),
        })
    return rows


def run(out_dir: str | Path = common.DEFAULT_OUT, data_dir: str | Path = common.DEFAULT_DATA, quick: bool = False,
        *, n_clips: int | None = None, iters: tuple[int, ...] = ITERS,
        presets: tuple[str, ...] = PRESETS) -> dict[str, Any]:
    """Measure every method on ``n_clips`` test takes spread over digits and speakers."""
    files = common.spread(common.fsdd_files(data_dir, "test"), n_clips or (QUICK_CLIPS if quick else FULL_CLIPS))
    if not files:
        raise FileNotFoundError(f"no FSDD test takes (takes 0-4) in {common.fsdd_dir(data_dir)}")
    res = common.begin(NAME, quick, n_clips=len(files), iters=list(iters), presets=list(presets))
    res["presets"] = {}
    for p in presets:
        print(f"[phase] {p}: {len(files)} clips x {len(iters) + 1} methods ...", file=sys.stderr, flush=True)
        res["presets"][p] = measure_preset(files, p, iters)
    common.finish(res)
    res["plot"] = plot(res, Path(out_dir) / f"{NAME}.png")
    return common.write_result(out_dir, NAME, res, markdown(res))


def plot(res: dict[str, Any], path: Path) -> str:
    """Quality against time per clip, one line per preset; returns the file name."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for preset, rows in res["presets"].items():
        t = [r["time_ms"]["median_ms"] for r in rows]
        for ax, key in zip(axes, ("spectral_convergence", "stoi_joined")):
            ax.plot(t, [r[key] for r in rows], "o-", label=preset)
            for r, x in zip(rows, t):
                ax.annotate("0" if r["phase"] == "zero" else str(r["n_iter"]), (x, r[key]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
    for ax, title in zip(axes, ("spectral convergence (lower is better)", "STOI, clips joined (higher is better)")):
        ax.set_xscale("log")
        ax.set_xlabel("time per clip (ms, log; labels: Griffin-Lim iterations, 0 = zero phase)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    return common.save_figure(fig, path)


def markdown(res: dict[str, Any]) -> str:
    f = common.fmt
    rows = []
    for preset, rs in res["presets"].items():
        for r in rs:
            rows.append([preset, r["method"], f(r["spectral_convergence"], 3), f(r["lsd_db"], 2),
                         f"{f(r['stoi'], 3)} ({r['stoi_clips']})", f(r["stoi_joined"], 3),
                         f(r["time_ms"]["median_ms"], 1), f(r["time_ms"]["p95_ms"], 1)])
    n = res["params"]["n_clips"]
    return (common.header_md(res, "Phase estimation") +
            f"Original spectrograms of {n} FSDD test takes, resynthesised and compared with the recordings.\n\n" +
            common.md_table(["preset", "method", "spectral convergence", "LSD (dB)", "STOI (clips with one)",
                             "STOI (clips joined)", "ms/clip median", "ms/clip p95"], rows) +
            f"\n![phase estimation quality against time]({res['plot']})\n")


if __name__ == "__main__":
    a = common.bench_args(__doc__)
    print(markdown(run(a.out, a.data, a.quick)))
