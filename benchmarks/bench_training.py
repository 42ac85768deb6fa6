"""Training throughput: optimisation steps per second for the ``study`` and ``default`` archs.

Each (arch, spectrogram shape) case runs in its own process on synthetic batches of the right
shape with the arch's own batch size (vae.config.train_config) and the step of vae.train
(vae.train.train_step): forward, loss, finiteness check, backward, gradient clipping, Adam, and
reading the losses back (a device sync).
Data loading is excluded (training preloads the store into RAM). After ``warmup`` steps, steps
are timed until ``steps`` are done or ``max_s`` seconds have passed (at least one step).

On CUDA, every case is also measured in the variants fp32, bf16 autocast, channels-last,
torch.compile and all three together; without CUDA those are reported as "n/a (no CUDA)".

    python -m benchmarks.bench_training [--quick] [--out DIR]   # from the repository root
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "training"
# preset -> presets sharing its shape (study-music is 512x256 like music: one case covers both)
PRESETS = {"digits": "digits", "study-digits": "study-digits", "music": "music / study-music"}
ARCHS = ("study", "default")
CUDA_VARIANTS = ("fp32", "bf16", "channels_last", "compile", "bf16+channels_last+compile")
# On CPU the study's batch of 64 at 512x256 would need tens of GB of activations: capped.
CPU_BATCH_CAP = {("study", (512, 256)): 4}
NO_CUDA = "n/a (no CUDA)"


def train_case(arch: str, shape: list[int], batch_size: int, steps: int, warmup: int, max_s: float,
               device: str = "cpu", variant: str = "fp32", seed: int = 0) -> dict[str, Any]:
    """Time optimisation steps of one model on a synthetic batch; samples/s and ms/step."""
    import torch

    from vae.config import model_config, train_config
    from vae.model import VAE
    from vae.train import train_step

    shape_t = (int(shape[0]), int(shape[1]))
    torch.manual_seed(seed)
    mc, tc = model_config(arch, shape_t), train_config(arch, shape_t)
    model = VAE(mc).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    x = torch.rand(batch_size, 1, *shape_t, device=device)
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fwd = torch.compile(model) if "compile" in variant else model
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16) if "bf16" in variant \
        else None

    def step() -> None:  # the step of vae.train; reading its losses back waits for the device
        train_step(model, opt, x, tc, forward=fwd, autocast=autocast)

    try:
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        warmup_s = time.perf_counter() - t0
        times: list[float] = []
        while len(times) < steps and (not times or sum(times) < max_s):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    except torch.cuda.OutOfMemoryError:
        return {"error": "out of GPU memory", "batch_size": batch_size}
    return {"samples_per_s": round(batch_size * len(times) / sum(times), 2),
            "step_ms": round(common.percentile(times, 50) * 1000, 1), "steps": len(times),
            "warmup_s": round(warmup_s, 2), "batch_size": batch_size,
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


def run(out_dir: str | Path = common.DEFAULT_OUT, data_dir: str | Path = common.DEFAULT_DATA, quick: bool = False,
        *, isolate: bool = True, presets: tuple[str, ...] | None = None, archs: tuple[str, ...] = ARCHS,
        steps: int | None = None, warmup: int = 1, max_s: float | None = None,
        batch_cap: int | None = None) -> dict[str, Any]:
    """Measure each (arch, preset shape) on CPU, and each CUDA variant when CUDA is available.

    ``data_dir`` is unused (synthetic batches). ``batch_cap`` limits every batch (smoke tests).
    """
    import torch

    from preprocessing.config import PRESETS as SPEC_PRESETS
    from vae.config import train_config

    presets = presets or tuple(PRESETS)
    steps = steps or (3 if quick else 10)
    max_s = max_s if max_s is not None else (8.0 if quick else 30.0)
    cuda = torch.cuda.is_available()
    res = common.begin(NAME, quick, steps=steps, warmup=warmup, max_s=max_s, batch_cap=batch_cap,
                       cuda_variants=list(CUDA_VARIANTS) if cuda else NO_CUDA)
    cases = []
    for preset in presets:
        shape = SPEC_PRESETS[preset].shape
        for arch in archs:
            own = train_config(arch, shape).batch_size
            cpu_batch = min(own, CPU_BATCH_CAP.get((arch, shape), own), batch_cap or own)
            kw = {"arch": arch, "shape": list(shape), "steps": steps, "warmup": warmup, "max_s": max_s}
            print(f"[training] {arch} {shape[0]}x{shape[1]} cpu batch {cpu_batch} ...", file=sys.stderr, flush=True)
            case = {"arch": arch, "preset": PRESETS.get(preset, preset), "shape": list(shape), "own_batch": own,
                    "cpu": common.run_case("benchmarks.bench_training:train_case",
                                           {**kw, "batch_size": cpu_batch, "device": "cpu"}, isolate)}
            if cuda:
                case["cuda"] = {}
                for v in CUDA_VARIANTS:
                    print(f"[training] {arch} {shape[0]}x{shape[1]} cuda {v} ...", file=sys.stderr, flush=True)
                    case["cuda"][v] = common.run_case(
                        "benchmarks.bench_training:train_case",
                        {**kw, "batch_size": min(own, batch_cap or own), "device": "cuda", "variant": v,
                         "steps": steps * 3, "warmup": max(warmup, 3)}, isolate)
            else:
                case["cuda"] = {v: NO_CUDA for v in CUDA_VARIANTS}
            cases.append(case)
    res["cases"] = cases
    common.finish(res)
    return common.write_result(out_dir, NAME, res, markdown(res))


def _speedups(res: dict[str, Any]) -> list[str]:
    by = {(c["preset"], c["arch"]): c["cpu"]["samples_per_s"] for c in res["cases"]}
    out = []
    for preset in dict.fromkeys(c["preset"] for c in res["cases"]):
        d, s = by.get((preset, "default")), by.get((preset, "study"))
        if d and s:
            out.append(f"{preset}: default {d / s:.1f}x the study's samples/s")
    return out


def markdown(res: dict[str, Any]) -> str:
    f = common.fmt
    rows = []
    for c in res["cases"]:
        r = c["cpu"]
        batch = f"{r['batch_size']}" + (f" (own {c['own_batch']})" if r["batch_size"] != c["own_batch"] else "")
        rows.append([c["arch"], c["preset"], f"{c['shape'][0]}x{c['shape'][1]}", r["params_m"], batch,
                     f(r["samples_per_s"], 1), f(r["step_ms"], 0), r["steps"], f(r["peak_rss_mb"], 0)])
    text = common.header_md(res, "Training throughput") + "CPU, fp32:\n\n" + common.md_table(
        ["arch", "preset", "shape", "params (M)", "batch", "samples/s", "ms/step (median)", "timed steps",
         "peak RSS (MB)"], rows)
    speed = _speedups(res)
    if speed:
        text += "\nSame shape, same machine: " + "; ".join(speed) + ".\n"
    text += ("\nSynthetic batches, the step of vae.train (forward, loss, backward, clipping, Adam, loss read back); "
             "data loading excluded. The study's batch of 64 is capped on CPU at 512x256 (memory).\n\n")
    if all(isinstance(r, str) for c in res["cases"] for r in c["cuda"].values()):
        return text + f"CUDA variants ({', '.join(CUDA_VARIANTS)}): {NO_CUDA} on this machine.\n"
    text += "CUDA (samples/s, peak CUDA memory allocated):\n\n"
    cuda_rows = []
    for c in res["cases"]:
        cells = []
        for v in CUDA_VARIANTS:
            r = c["cuda"].get(v)
            if isinstance(r, str):
                cells.append(r)
            elif "error" in r:
                cells.append(r["error"])
            else:
                cells.append(f"{r['samples_per_s']:.0f}/s, {f(r.get('cuda_peak_mb'), 0)} MB"
                             + (f", warm-up {r['warmup_s']:.0f} s" if "compile" in v else ""))
        cuda_rows.append([c["arch"], c["preset"], *cells])
    text += common.md_table(["arch", "preset", *CUDA_VARIANTS], cuda_rows)
    return text


if __name__ == "__main__":
    a = common.bench_args(__doc__)
    print(markdown(run(a.out, a.data, a.quick)))
