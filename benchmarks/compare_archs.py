"""Architecture comparison: ``default`` against the study's ``study`` preset, in one run.

Each arm preprocesses FSDD with its own preset, trains for the same wall time on this machine
(each in its own process, so peak memory is its own), then both are evaluated on the FSDD test
takes (0-4) on common footing: the log-spectral distance between the original recordings and
the resynthesised reconstructions, both analysed with one fixed STFT (vae.metrics).

    python -m benchmarks.compare_archs --minutes 7.5            # ~20 min in all, from the repository root
    python -m benchmarks.compare_archs --minutes 0.1 --limit 60  # smoke run

Writes benchmarks/results/arch_comparison.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fsdd" / "recordings"
ARMS = {"default": ("digits", "default"), "study": ("study-digits", "study")}  # arm -> (preset, arch)


def child(args: argparse.Namespace) -> None:
    """Train one arm; print a JSON line with throughput and this process's peak memory."""
    from vae.train import train

    samples_per_s, last = [], None
    for ev in train(args.store, args.ckpt, arch=args.arch, epochs=10_000, time_limit_s=args.seconds,
                    preview_every=0, seed=0):
        if ev.kind in ("epoch", "stopped", "done"):
            last = ev
        if ev.kind == "step":
            samples_per_s.append(ev.samples_per_s)
    cfg = json.loads((Path(args.ckpt) / "last" / "config.json").read_text())
    history = cfg["meta"]["history"]
    print(json.dumps({
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "samples_per_s": samples_per_s[-1] if samples_per_s else 0.0,
        "epochs_completed": len(history),
        "steps_last_epoch": last.step if last else 0,
        "train_time_s": cfg["meta"]["train_time_s"],
        "val_recon_mse": history[-1]["val"]["recon"] if history else None,
        "n_train": cfg["meta"]["n_train"],
    }))


def run(args: argparse.Namespace) -> dict:
    from preprocessing.config import preset
    from preprocessing.store import build_store
    from vae.checkpoint import load_checkpoint
    from vae.evaluate import evaluate

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(args.data).glob("*.wav"))
    if args.limit:  # a small, balanced subset for smoke runs: the first takes of every digit/speaker
        files = [f for f in files if int(f.stem.split("_")[2]) < args.limit // 50 + 5]
    test_dir = work / "test_takes"
    test_dir.mkdir(exist_ok=True)
    for f in files:  # the evaluation set: links to the test takes, nothing copied
        if int(f.stem.split("_")[2]) < 5 and not (test_dir / f.name).exists():
            (test_dir / f.name).symlink_to(f.resolve())

    results: dict = {"machine": common.machine_text(common.machine()), "minutes_per_arm": args.minutes,
                     "n_files": len(files), "arms": {}}
    for arm in args.arms:
        preset_name, arch = ARMS[arm]
        store, ckpt = work / f"store_{arm}", work / f"ckpt_{arm}"
        t0 = time.perf_counter()
        build_store(files, store, preset(preset_name))
        prep_s = time.perf_counter() - t0
        print(f"[{arm}] training {args.minutes} min ...", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.compare_archs", "--child", "--store", str(store), "--ckpt", str(ckpt),
             "--arch", arch, "--seconds", str(args.minutes * 60)], cwd=ROOT, check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["preprocess_s"] = round(prep_s, 1)
        r["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # other work on the machine
        r["epoch_s"] = round(r["n_train"] / r["samples_per_s"], 1) if r["samples_per_s"] else None
        ck = load_checkpoint(ckpt)
        r["params_m"] = round(sum(p.numel() for p in ck.model.parameters()) / 1e6, 2)
        r["preset"], r["arch"], r["shape"] = preset_name, arch, list(ck.spec.shape)
        print(f"[{arm}] evaluating ...", file=sys.stderr, flush=True)
        r["eval_own_phase"] = evaluate(ck, test_dir, with_stoi=True)
        if ck.spec.phase != "griffinlim":
            r["eval_griffinlim"] = evaluate(ck, test_dir, phase="griffinlim", with_stoi=True)
        results["arms"][arm] = r
    return results


def markdown(res: dict) -> str:
    loads = [x for r in res["arms"].values() for x in r.get("load_avg_1min", [])]
    lines = [f"Machine: {res['machine']}. Each arm trained {res['minutes_per_arm']} min wall time on "
             f"{res['n_files']} FSDD files (test takes 0-4 held out)."
             + (f" 1-minute load average at the arms' start/end: {loads}." if loads else ""), "",
             "| arm | spectrogram | params (M) | s / epoch | samples/s | peak RSS (MB) | epochs in budget "
             "| val recon MSE (own space) | LSD dB (own phase) | LSD dB (Griffin-Lim) | STOI (own phase) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, r in res["arms"].items():
        e, g = r["eval_own_phase"], r.get("eval_griffinlim", r["eval_own_phase"])
        val = "n/a (no full epoch)" if r["val_recon_mse"] is None else f"{r['val_recon_mse']:.4f}"
        epochs = str(r["epochs_completed"])
        if r["epochs_completed"] == 0:
            epochs += f" + {r['steps_last_epoch']} steps"
        lines.append(f"| {arm} | {r['shape'][0]}x{r['shape'][1]} | {r['params_m']} | {r['epoch_s']} | "
                     f"{r['samples_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {epochs} | "
                     f"{val} | "
                     f"{e['lsd_db']:.2f} ({e['phase']}) | {g['lsd_db']:.2f} | {e.get('stoi', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="FSDD recordings folder")
    p.add_argument("--minutes", type=float, default=7.5, help="training wall time per arm")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--limit", type=int, default=0, help="use about this many files (smoke runs)")
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "tmp" / "compare"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--ckpt", help=argparse.SUPPRESS)
    p.add_argument("--arch", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    if not Path(args.data).is_dir():
        sys.exit(f"error: FSDD recordings not found at {args.data}; pass --data")
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "arch_comparison.json").write_text(json.dumps(res, indent=2))
    (out / "arch_comparison.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
