"""Unseen speakers: leave-one-speaker-out reconstruction quality on FSDD (issue #11, item 4).

For each speaker found in the FSDD file names (``{digit}_{speaker}_{take}.wav``): build a store
from the clips of the OTHER speakers (digits preset; a folder of symbolic links, nothing is
copied), train the architecture with a budget (``--epochs`` and/or ``--time-limit`` seconds of
training), then evaluate the final weights (``last``: no selection on test data) on
(a) every clip of the held-out speaker and (b) the training speakers' own test takes (takes 0-4,
the store's test split): STOI, log-spectral distance (LSD, dB) and spectral convergence of the
reconstruction resynthesised with Griffin-Lim (``--griffinlim-iters``, 64), against the original
(vae.evaluate). Reported per held-out speaker and as the mean over speakers, with the ratio
LSD_unseen / LSD_own. Targets of the issue: mean STOI >= 0.80 on unseen speakers, LSD ratio <= 1.2.

    python -m benchmarks.bench_unseen_speaker --time-limit 600 --device auto   # from the repository root
    python -m benchmarks.bench_unseen_speaker --speakers george --time-limit 60 --work /tmp/loso
    python -m benchmarks.bench_unseen_speaker --quick                          # smoke run (small, fast)

Writes benchmarks/results/unseen_speaker.{json,md} (``--quick``: benchmarks/results/tmp/quick unless
``--out``) after every speaker, so an interrupted run resumes: speakers whose result is already in
the JSON (for the same settings) are skipped unless ``--force``. Stores and checkpoints go to a
temporary folder, or to ``--work DIR`` to keep them (a kept store is reused). Not in run_all's
default list: it is long. Training runs on ``--device`` (auto: CUDA when present); evaluation (Griffin-Lim,
STOI) runs on the CPU, in ``--eval-workers`` processes (default: half the cores, at most 8).

Cost per held-out speaker, measured on 2 CPU cores shared with other jobs (default architecture,
``--time-limit 60``, all 2,000 training and 500 unseen clips): 4-7 minutes: store ~20 s (reused from a
kept ``--work``), training 60 s (0.8-4.2 epochs, depending on the load), evaluation of 500 unseen and
200 own clips 2.8-6 min (0.2-0.5 s a clip, one process). All five speakers take five times that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import common, holdout
from benchmarks.holdout import links, mean

NAME = "unseen_speaker"
# each architecture's own spectrogram preset
ARCH_PRESETS = {"default": "digits", "study": "study-digits", "temporal": "digits"}
TARGET_STOI, TARGET_LSD_RATIO = 0.80, 1.2
METRICS = ("stoi", "lsd_db", "spectral_convergence")
QUICK = {"time_limit_s": 5.0, "max_train_files": 300, "max_eval_files": 20}  # --quick defaults
QUICK_OUT = common.DEFAULT_OUT / "tmp" / "quick"
MACHINE_ONLY = ("device", "eval_workers")  # settings that may change between the runs of one results file
SETTINGS_BEFORE = {"augment": False}  # settings older results files lack, as those runs had them


def log(msg: str) -> None:
    holdout.say(NAME, msg)


# ---------------------------------------------------------------- speakers and folders


def clips_by_speaker(folder: str | Path) -> dict[str, list[Path]]:
    """FSDD-named clips of ``folder`` grouped by speaker (lower case, as the store's manifest has them)."""
    from preprocessing.labels import FSDD_NAME

    found: dict[str, list[Path]] = {}
    for f in sorted(Path(folder).glob("*.wav")):
        m = FSDD_NAME.match(f.stem)
        if m:
            found.setdefault(m.group(2).lower(), []).append(f)
    return found


def choose_speakers(found: dict[str, list[Path]], wanted: Sequence[str] | None, folder: str | Path) -> list[str]:
    """The held-out speakers to run (all found when ``wanted`` is empty); ValueError names bad ones."""
    if len(found) < 2:
        raise ValueError(f"{folder} has FSDD clips of {len(found)} speaker(s); leaving one out needs at least 2")
    wanted = [w.strip().lower() for w in wanted or [] if w.strip()]
    unknown = [w for w in wanted if w not in found]
    if unknown:
        raise ValueError(f"unknown speaker(s) {', '.join(map(repr, unknown))}: {folder} has "
                         f"{', '.join(sorted(found))}")
    return list(dict.fromkeys(wanted)) or sorted(found)


def split_files(by_speaker: dict[str, list[Path]], held_out: str, max_train: int = 0,
                max_eval: int = 0) -> tuple[list[Path], list[Path]]:
    """(the other speakers' clips, the held-out speaker's clips), each spread over at most max_* files."""
    others = sorted(f for s, fs in by_speaker.items() if s != held_out for f in fs)
    unseen = by_speaker[held_out]
    return (common.spread(others, max_train) if max_train else others,
            common.spread(unseen, max_eval) if max_eval else unseen)


# ---------------------------------------------------------------- train and evaluate


def default_workers() -> int:
    """Evaluation processes: Griffin-Lim on small frames runs on one core, so use half the cores (up to 8)."""
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def eval_folder(ckpt: str, folder: str, n_iter: int, device: str, threads: int = 0) -> dict[str, Any]:
    """STOI, LSD and spectral convergence of Griffin-Lim reconstructions of every clip in ``folder``."""
    r = holdout.evaluate_checkpoint(ckpt, folder, n_iter, device, threads, with_stoi=True)
    return {k: r.get(k) for k in (*METRICS, "stoi_files", "n_files", "n_windows")}


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over all files of per-chunk means (STOI weighted by the files that have one)."""
    n = {k: sum(p[k] for p in parts) for k in ("n_files", "n_windows", "stoi_files")}
    out: dict[str, Any] = {k: round(sum(p[k] * p["n_files"] for p in parts) / n["n_files"], 5)
                           for k in ("lsd_db", "spectral_convergence")}
    with_stoi = [p for p in parts if p["stoi"] is not None and p["stoi_files"]]
    out["stoi"] = round(sum(p["stoi"] * p["stoi_files"] for p in with_stoi) / n["stoi_files"], 5) if with_stoi else None
    return {**out, **n}


def measure(ckpt: Path, files: Sequence[Path], folder: Path, n_iter: int, device: str,
            workers: int = 1) -> dict[str, Any]:
    """Evaluate ``files`` (linked into ``folder``), in ``workers`` processes when there are enough files."""
    t0 = time.perf_counter()
    if workers <= 1 or len(files) < 4 * workers:
        r = eval_folder(str(ckpt), str(links(files, folder)), n_iter, device)
    else:
        chunks = [str(links(files[k::workers], folder / str(k))) for k in range(workers)]
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            parts = list(ex.map(eval_folder, *zip(*[(str(ckpt), c, n_iter, device, threads) for c in chunks])))
        r = combine(parts)
    return {**{k: r[k] for k in METRICS}, **{k: r[k] for k in ("stoi_files", "n_files", "n_windows")},
            "eval_s": round(time.perf_counter() - t0, 1)}


def one_speaker(held_out: str, by_speaker: dict[str, list[Path]], work: Path, cfg: Any, s: dict[str, Any],
                model_cfg: Any = None) -> dict[str, Any]:
    """Store, training and both evaluations for one held-out speaker (see the module docstring)."""
    from preprocessing.store import build_store
    from vae.evaluate import select_files

    train_files, unseen_files = split_files(by_speaker, held_out, s["max_train_files"], s["max_eval_files"])
    others = sorted(x for x in by_speaker if x != held_out)
    log(f"{held_out}: store from {len(train_files)} clips of {', '.join(others)} ...")
    t0 = time.perf_counter()
    summary = build_store(links(train_files, work / "train_clips"), work / "store", cfg)
    store_s = round(time.perf_counter() - t0, 1)
    log(f"{held_out}: training {s['arch']} ({holdout.budget_text(s)}) on {summary.n_clips} clips ...")
    trained = holdout.train_model(work / "store", work / "ckpt", s["arch"], _overrides(s), model_cfg)
    ev = (work / "ckpt" / "last", s["griffinlim_iters"], s["device"], s["eval_workers"])
    log(f"{held_out}: evaluating {len(unseen_files)} unseen clips ({s['eval_workers']} process(es)) ...")
    unseen = measure(ev[0], unseen_files, work / "eval_unseen", *ev[1:])
    own_files = select_files(work / "store", "test")[0]
    log(f"{held_out}: evaluating the training speakers' {len(own_files)} test takes ...")
    own = measure(ev[0], own_files, work / "eval_own", *ev[1:])
    ratio = unseen["lsd_db"] / own["lsd_db"] if unseen["lsd_db"] and own["lsd_db"] else None
    log(f"{held_out}: STOI unseen {common.fmt(unseen['stoi'], 3)} / own {common.fmt(own['stoi'], 3)}, "
        f"LSD unseen {common.fmt(unseen['lsd_db'], 2)} / own {common.fmt(own['lsd_db'], 2)} dB")
    return {"train_speakers": others, "store_clips": summary.n_clips, "store_s": store_s, "train": trained,
            "unseen": unseen, "own_test": own, "lsd_ratio": round(ratio, 4) if ratio is not None else None,
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def _overrides(s: dict[str, Any]) -> dict[str, Any]:
    return holdout.train_overrides(s, ("latent_dim", "batch_size", "augment"))


# ---------------------------------------------------------------- summary and report


def summarise(speakers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over the held-out speakers, and whether they meet the issue's targets."""
    rs = list(speakers.values())
    means = {part: {k: mean([r[part][k] for r in rs]) for k in METRICS} for part in ("unseen", "own_test")}
    ratio = mean([r["lsd_ratio"] for r in rs])
    stoi = means["unseen"]["stoi"]
    return {"n_speakers": len(rs), "mean": {**means, "lsd_ratio": ratio},
            "targets": {"unseen_stoi_min": TARGET_STOI, "lsd_ratio_max": TARGET_LSD_RATIO},
            "meets": {"unseen_stoi": None if stoi is None else stoi >= TARGET_STOI,
                      "lsd_ratio": None if ratio is None else ratio <= TARGET_LSD_RATIO}}


def _row(name: str, r: dict[str, Any], extra: Sequence[Any]) -> list[Any]:
    f, u, o = common.fmt, r["unseen"], r["own_test"]
    return [name, *extra, f(u["stoi"], 3), f(o["stoi"], 3), f(u["lsd_db"], 2), f(o["lsd_db"], 2),
            f(r["lsd_ratio"], 3), f(u["spectral_convergence"], 3), f(o["spectral_convergence"], 3)]


def markdown(res: dict[str, Any]) -> str:
    s, p, f = res["summary"], res["params"], common.fmt
    text = common.header_md(res, "Unseen speakers (leave one speaker out)") + (
        f"For each held-out speaker, the `{p['arch']}` architecture trained on the other speakers' clips "
        f"(preset {p['preset']}, budget: {holdout.budget_text(p)}), then reconstructed every clip of the held-out "
        f"speaker (unseen) and the training speakers' test takes 0-4 (own), resynthesised with Griffin-Lim "
        f"{p['griffinlim_iters']} iterations. STOI: higher is better (mean over clips long enough for it); "
        "LSD (dB) and spectral convergence: lower is better. Ratio: LSD unseen / LSD own. The mean row averages "
        "the per-speaker values.\n\n")
    heads = ["held out", "epochs", "train s", "device", "STOI unseen", "STOI own", "LSD unseen", "LSD own",
             "LSD ratio", "SC unseen", "SC own"]
    rows = [_row(k, r, [f(r["train"]["epochs"], 2), f(r["train"]["train_time_s"], 0), r["train"]["device"]])
            for k, r in sorted(res["speakers"].items())]
    if s["n_speakers"]:
        rows.append(_row("**mean**", s["mean"], ["", "", ""]))
    goals = {"unseen_stoi": f"mean unseen STOI >= {TARGET_STOI:.2f}", "lsd_ratio": f"LSD ratio <= {TARGET_LSD_RATIO}"}
    return text + holdout.table_and_targets(heads, rows, s["meets"], goals, f"{s['n_speakers']} speaker(s)")


def save(res: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write the results so far (a finished copy of ``res``, which keeps running)."""
    return holdout.save_folds(res, out_dir, NAME, "speakers", summarise, markdown)


# ---------------------------------------------------------------- the run


def previous(out_dir: Path, settings: dict[str, Any], force: bool) -> dict[str, dict[str, Any]]:
    """Per-speaker results already in ``<out>/unseen_speaker.json`` for the same settings.

    Results for other settings are refused (ValueError) unless ``force``, which drops them.
    """
    return holdout.previous(out_dir / f"{NAME}.json", settings, force, "speakers", MACHINE_ONLY, SETTINGS_BEFORE)


def run(fsdd: str | Path, out_dir: str | Path, *, quick: bool = False, speakers: Sequence[str] | None = None,
        arch: str = "default", preset_name: str | None = None, epochs: int | None = None,
        time_limit_s: float | None = None, latent_dim: int | None = None, batch_size: int | None = None,
        griffinlim_iters: int = 64, device: str = "auto", seed: int = 0, max_train_files: int | None = None,
        max_eval_files: int | None = None, eval_workers: int | None = None, work: str | Path | None = None,
        force: bool = False, spec_cfg: Any = None, model_cfg: Any = None, augment: bool = False) -> dict[str, Any]:
    """Leave each of ``speakers`` (default: all found in ``fsdd``) out in turn; write unseen_speaker.*.

    ``spec_cfg`` / ``model_cfg``: a SpectrogramConfig / ModelConfig instead of the preset's (tests);
    ``augment``: train with data augmentation (vae.augment).
    """
    from preprocessing.config import preset

    by_speaker = clips_by_speaker(fsdd)
    chosen = choose_speakers(by_speaker, speakers, fsdd)
    preset_name = preset_name or ARCH_PRESETS.get(arch, "digits")
    cfg = spec_cfg or preset(preset_name)
    if quick and not (epochs or time_limit_s):
        time_limit_s = QUICK["time_limit_s"]
    q = QUICK if quick else {}
    settings = {"fsdd": str(Path(fsdd).resolve()), "arch": arch,
                "preset": preset_name if spec_cfg is None else "custom", "spectrogram": cfg.to_dict(),
                "custom_model": model_cfg.to_dict() if model_cfg is not None else None,
                "epochs": epochs, "time_limit_s": time_limit_s, "latent_dim": latent_dim, "batch_size": batch_size,
                "griffinlim_iters": griffinlim_iters, "seed": seed, "augment": bool(augment), "device": device,
                "eval_workers": eval_workers or default_workers(),
                "max_train_files": max_train_files if max_train_files is not None else q.get("max_train_files", 0),
                "max_eval_files": max_eval_files if max_eval_files is not None else q.get("max_eval_files", 0)}
    settings = json.loads(json.dumps(settings))  # as the results file will hold them (lists, not tuples)
    holdout.check_training(arch, cfg, _overrides(settings), model_cfg)
    return holdout.run_folds(
        NAME, "speakers", Path(out_dir), settings, quick=quick, chosen=chosen, known=list(by_speaker), force=force,
        work=work, one_fold=lambda spk, w: one_speaker(spk, by_speaker, w, cfg, settings, model_cfg), save=save,
        machine_only=MACHINE_ONLY, settings_before=SETTINGS_BEFORE)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = holdout.parser(__doc__, "speaker", f"{QUICK['time_limit_s']:g} s of training unless a budget is given, "
                       f"at most {QUICK['max_train_files']} training and {QUICK['max_eval_files']} unseen clips",
                       "fsdd/recordings")
    p.add_argument("--fsdd", help="FSDD recordings folder (default <data>/fsdd/recordings)")
    p.add_argument("--speakers", help="held-out speakers, comma-separated (default: every speaker found)")
    p.add_argument("--arch", default="default", choices=sorted(ARCH_PRESETS))
    p.add_argument("--preset", help="spectrogram preset (default: digits; study-digits for --arch study)")
    p.add_argument("--augment", action="store_true", help="train with data augmentation (warp, stretch, gain, noise)")
    p.add_argument("--max-train-files", type=int, help="use about this many training clips (0: all)")
    p.add_argument("--max-eval-files", type=int, help="evaluate about this many unseen clips (0: all)")
    p.add_argument("--eval-workers", type=int, help="evaluation processes (default: half the cores, at most 8)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return holdout.main("bench_unseen_speaker", a.threads, lambda: run(
        a.fsdd or common.fsdd_dir(a.data), a.out or (QUICK_OUT if a.quick else common.DEFAULT_OUT), quick=a.quick,
        speakers=(a.speakers or "").split(","), arch=a.arch, preset_name=a.preset, epochs=a.epochs,
        time_limit_s=a.time_limit, latent_dim=a.latent_dim, batch_size=a.batch_size,
        griffinlim_iters=a.griffinlim_iters, device=a.device, seed=a.seed, max_train_files=a.max_train_files,
        max_eval_files=a.max_eval_files, eval_workers=a.eval_workers, work=a.work, force=a.force,
        augment=a.augment), markdown)


if __name__ == "__main__":
    sys.exit(main())
