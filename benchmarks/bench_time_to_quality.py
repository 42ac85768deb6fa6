"""Time to quality: how long each architecture trains to reach a validation error, and vice versa.

Each arm of benchmarks/compare_archs.py (``default`` on the digits preset, ``study`` on the
study-digits preset) trains on the FSDD store with vae.train.train, in its own process. Training
stops at fixed training times (``time_limit_s``; the study may not finish one epoch) and resumes
from ``last``; at each stop the current weights are evaluated on FSDD test takes (0-4) on common
footing: the log-spectral distance (dB) between the original recordings and the reconstructions
resynthesised with the same Griffin-Lim (vae.evaluate, vae.metrics). Time is training time:
optimisation steps only, without validation, checkpoints or this evaluation.

Reported: the time each arm first reaches a target LSD (the study's best within the budget, and
a fixed value), at the resolution of the evaluation points, and the LSD each reaches in equal time.

    python -m benchmarks.bench_time_to_quality [--quick] [--out DIR] [--data DIR]   # from the repository root
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.compare_archs import ARMS

NAME = "time_to_quality"
FULL_POINTS_S = (15, 30, 60, 90, 120, 180, 240, 300)  # training seconds at which to evaluate
QUICK_POINTS_S = (4, 8, 15)
FULL_EVAL_FILES, QUICK_EVAL_FILES = 50, 8
QUICK_TRAIN_FILES = 240  # spread over all files, so about a fifth are test takes
EVAL_ITERS = 32  # Griffin-Lim iterations for every arm's evaluation
FIXED_TARGET_DB = 8.0  # a fixed LSD target, dB (besides the study's best within budget)


def arm_case(store: str, ckpt: str, arch: str, eval_dir: str, points_s: list[float],
             n_iter: int = EVAL_ITERS, seed: int = 0) -> dict[str, Any]:
    """Train ``arch`` up to each time in ``points_s`` (s), evaluating the weights at every stop."""
    from vae.checkpoint import load_checkpoint
    from vae.evaluate import evaluate

    ckpt_p = Path(ckpt)
    curve: list[dict[str, Any]] = []
    with common.without_latent_stats() as vt:
        for t in points_s:
            if curve and curve[-1]["train_s"] >= t:  # the last step ran past this point already
                continue
            for _ in vt.train(store, ckpt, arch=arch, resume=(ckpt_p / "last" / "training_state.pt").is_file(),
                              epochs=10_000, time_limit_s=float(t), preview_every=0, seed=seed):
                pass
            ck = load_checkpoint(ckpt_p / "last")
            m = ck.meta
            r = evaluate(ck, eval_dir, phase="griffinlim", n_iter=n_iter, with_stoi=True)
            steps_per_epoch = math.ceil(m["n_train"] / ck.train_cfg.batch_size)
            curve.append({"train_s": m["train_time_s"],
                          "epochs": round(m["epoch"] + m["step"] / steps_per_epoch, 3),
                          "lsd_db": r["lsd_db"], "spectral_convergence": r["spectral_convergence"],
                          "stoi": r.get("stoi"), "stoi_files": r.get("stoi_files")})
            print(f"  {arch}: {curve[-1]}", file=sys.stderr, flush=True)
    ck = load_checkpoint(ckpt_p / "last")
    own = evaluate(ck, eval_dir, with_stoi=True)  # as the arm would be heard: its own phase method
    return {"curve": curve, "n_train": ck.meta["n_train"], "batch_size": ck.train_cfg.batch_size,
            "final_own_phase": {k: own.get(k) for k in ("phase", "griffinlim_iters", "lsd_db",
                                                        "spectral_convergence", "stoi", "stoi_files")},
            "params_m": round(sum(p.numel() for p in ck.model.parameters()) / 1e6, 2),
            "val_history": [{"epoch": h["epoch"], "val_recon": h["val"]["recon"], "train_s": h["train_time_s"]}
                            for h in ck.meta.get("history", [])]}


def first_reaching(curve: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds of the first evaluation point at or below ``target`` dB (None: never)."""
    return next((p["train_s"] for p in curve if p["lsd_db"] <= target), None)


def run(out_dir: str | Path = common.DEFAULT_OUT, data_dir: str | Path = common.DEFAULT_DATA, quick: bool = False,
        *, isolate: bool = True, points_s: tuple[float, ...] | None = None, n_eval: int | None = None,
        n_iter: int = EVAL_ITERS, train_files: int | None = None) -> dict[str, Any]:
    """Train both arms to the same training times and evaluate them; write time_to_quality.*."""
    from preprocessing.config import preset
    from preprocessing.store import build_store

    points_s = points_s or (QUICK_POINTS_S if quick else FULL_POINTS_S)
    all_files = common.fsdd_files(data_dir)
    if not all_files:
        raise FileNotFoundError(f"no FSDD recordings in {common.fsdd_dir(data_dir)}")
    n_train_files = train_files or (QUICK_TRAIN_FILES if quick else 0)
    inputs: Any = common.spread(all_files, n_train_files) if n_train_files else str(common.fsdd_dir(data_dir))
    files = inputs if isinstance(inputs, list) else all_files
    test = [f for f in files if int(f.stem.split("_")[2]) < 5]
    evals = common.spread(test, n_eval or (QUICK_EVAL_FILES if quick else FULL_EVAL_FILES))
    work = common.tmp_dir(out_dir, NAME)
    eval_dir = common.link_files(evals, work / "eval_takes")
    res = common.begin(NAME, quick, points_s=list(points_s), n_files=len(files), n_eval=len(evals),
                       griffinlim_iters=n_iter, fixed_target_db=FIXED_TARGET_DB)
    res["arms"] = {}
    for arm, (preset_name, arch) in ARMS.items():
        store = common.tmp_dir(out_dir, "stores") / f"fsdd-{preset_name}"
        print(f"[time_to_quality] {arm}: store {preset_name} ...", file=sys.stderr, flush=True)
        build_store(inputs, store, preset(preset_name))
        ckpt = work / f"ckpt_{arm}"
        shutil.rmtree(ckpt, ignore_errors=True)
        print(f"[time_to_quality] {arm}: training to {points_s[-1]} s ...", file=sys.stderr, flush=True)
        r = common.run_case("benchmarks.bench_time_to_quality:arm_case",
                            {"store": str(store), "ckpt": str(ckpt), "arch": arch, "eval_dir": str(eval_dir),
                             "points_s": list(points_s), "n_iter": n_iter}, isolate)
        res["arms"][arm] = {"preset": preset_name, "arch": arch, **r}
    res["summary"] = summarise(res)
    common.finish(res)
    res["plot"] = plot(res, Path(out_dir) / f"{NAME}.png")
    return common.write_result(out_dir, NAME, res, markdown(res))


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Targets, time to each target per arm, and the LSD each arm reached in equal time."""
    arms = res["arms"]
    study_best = min((p["lsd_db"] for p in arms["study"]["curve"]), default=float("nan"))
    targets = {"study's best within budget": study_best, "fixed": FIXED_TARGET_DB}
    to_target = {name: {arm: first_reaching(a["curve"], t) for arm, a in arms.items()} for name, t in targets.items()}
    # Equal time: each arm's stop at the budget (the last point), which lands after the step that
    # crosses it, so an arm with slow steps may have trained up to one step longer.
    equal_time = {arm: {k: a["curve"][-1][k] for k in ("train_s", "lsd_db", "stoi", "epochs")}
                  for arm, a in arms.items() if a["curve"]}
    return {"targets_db": targets, "time_to_target_s": to_target, "budget_s": res["params"]["points_s"][-1],
            "equal_time": equal_time}


def plot(res: dict[str, Any], path: Path) -> str:
    """LSD and STOI against training time for both arms, with the targets; returns the file name."""
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm, a in res["arms"].items():
        t = [p["train_s"] for p in a["curve"]]
        axes[0].plot(t, [p["lsd_db"] for p in a["curve"]], "o-", label=f"{arm} ({a['preset']})")
        axes[1].plot(t, [p["stoi"] if p["stoi"] is not None else float("nan") for p in a["curve"]], "o-",
                     label=f"{arm} ({a['preset']})")
    for (name, v), style in zip(res["summary"]["targets_db"].items(), ("--", ":")):
        if math.isfinite(v):
            axes[0].axhline(v, color="grey", ls=style, lw=1, label=f"target: {name} ({v:.2f} dB)")
    axes[0].set_ylabel("LSD, original vs reconstruction (dB, lower is better)")
    axes[1].set_ylabel("STOI (higher is better)")
    for ax, loc in zip(axes, ("center right", "best")):
        ax.set_xlabel("training time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc=loc)
    fig.suptitle(f"FSDD test takes, Griffin-Lim {res['params']['griffinlim_iters']} iterations for both", fontsize=10)
    return common.save_figure(fig, path)


def markdown(res: dict[str, Any]) -> str:
    f, s = common.fmt, res["summary"]
    p = res["params"]
    text = common.header_md(res, "Time to quality") + (
        f"Each arm trained on {p['n_files']} FSDD files and was evaluated at the training times below on "
        f"{p['n_eval']} test takes: LSD (dB) and STOI of the reconstruction resynthesised with Griffin-Lim "
        f"{p['griffinlim_iters']} iterations, against the original recording. Training time counts optimisation "
        "steps only; a stop lands after the step that crosses the point, so times can run over it.\n\n")
    rows = []
    for arm, a in res["arms"].items():
        for q in a["curve"]:
            rows.append([arm, a["preset"], f(q["train_s"], 1), f(q["epochs"], 2), f(q["lsd_db"], 2),
                         f(q["spectral_convergence"], 3), f(q["stoi"], 3)])
    text += common.md_table(["arm", "preset", "training s", "epochs", "LSD (dB)", "spectral convergence", "STOI"],
                            rows)
    trows = []
    for name, t in s["targets_db"].items():
        reached = s["time_to_target_s"][name]
        trows.append([f"{name}: {f(t, 2)} dB", *[f"{f(reached[a], 0)} s" if reached[a] is not None
                                                  else "not reached" for a in res["arms"]]])
    text += "\nTime to reach the target LSD (first evaluation point at or below it):\n\n"
    text += common.md_table(["target", *[f"{a}" for a in res["arms"]]], trows)
    eq = s["equal_time"]
    text += f"\nIn equal time (a budget of {f(s['budget_s'], 0)} s of training): " + "; ".join(
        f"{a} reaches {f(e['lsd_db'], 2)} dB LSD, STOI {f(e['stoi'], 3)} after {f(e['train_s'], 0)} s "
        f"({f(e['epochs'], 2)} epochs)" for a, e in eq.items()) + ".\n"
    arows = []
    for arm, a in res["arms"].items():
        o = a["final_own_phase"]
        phase = "zero phase" if o["phase"] == "zero" else f"Griffin-Lim {o['griffinlim_iters']}"
        arows.append([arm, a["arch"], a["preset"], a["params_m"], a["batch_size"], a["n_train"],
                      f(a["peak_rss_mb"], 0), phase, f(o["lsd_db"], 2), f(o["stoi"], 3)])
    text += ("\nThe arms, and the last evaluation point heard with each arm's own phase method (the study "
             "resynthesised with zero phase):\n\n" +
             common.md_table(["arm", "arch", "preset", "params (M)", "batch", "training clips", "peak RSS (MB)",
                              "own phase", "LSD (dB)", "STOI"], arows))
    text += ("\nPart of the study's gap is its spectrogram settings: even the original study-digits spectrogram "
             "comes back with a higher LSD through Griffin-Lim than the digits one (see Phase estimation).\n")
    return text + f"\n![LSD against training time]({res['plot']})\n"


if __name__ == "__main__":
    a = common.bench_args(__doc__)
    print(markdown(run(a.out, a.data, a.quick)))
