"""The shared parts of the hold-out benchmarks (bench_unseen_speaker, bench_music_holdout).

Each leaves one group of recordings out in turn (a *fold*: a speaker, a music track), builds a store from the
others through a folder of symbolic links (nothing is copied), trains with a budget, evaluates the final weights
and writes its results after every fold, so an interrupted run resumes where it stopped (:func:`run_folds`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import common


def say(name: str, msg: str) -> None:
    """A progress line on stderr, tagged with the benchmark's name."""
    print(f"[{name}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- folders


def class_names(files: Sequence[Path]) -> dict[Path, Path]:
    """Each file by its name in the class-folder layout, ``<its folder's name>/<file name>``; ValueError when two
    different files would have one name."""
    out: dict[Path, Path] = {}
    for f in map(Path, files):
        rel = Path(f.parent.name, f.name)
        if rel in out and out[rel].resolve() != f.resolve():
            raise ValueError(f"{out[rel]} and {f} would both be linked as {rel}; rename one")
        out[rel] = f
    return out


def links(files: Sequence[Path], folder: Path, keep_parent: bool = False) -> Path:
    """A fresh folder of links to ``files`` (a kept work folder may hold links of other settings).

    ``keep_parent``: each link goes to ``<its file's folder name>/<file name>`` (:func:`class_names`: the
    class-folder layout ``<genre>/<file>``, so the store labels the clips by folder).
    """
    shutil.rmtree(folder, ignore_errors=True)
    if not keep_parent:
        return common.link_files(files, folder)
    folder.mkdir(parents=True, exist_ok=True)
    for rel, f in class_names(files).items():
        common.link_files([f], folder / rel.parent)
    return folder


@contextlib.contextmanager
def work_folder(work: str | Path | None, prefix: str) -> Iterator[Path]:
    """``work`` (kept), or a temporary folder deleted afterwards."""
    if work:
        Path(work).mkdir(parents=True, exist_ok=True)
        yield Path(work)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------- training


def budget(epochs: int | None, time_limit_s: float | None) -> dict[str, Any]:
    """Training overrides for the budget (neither: the architecture's default number of epochs)."""
    out: dict[str, Any] = {}
    if time_limit_s:
        out.update(time_limit_s=float(time_limit_s), epochs=epochs or 10_000)
    elif epochs:
        out["epochs"] = epochs
    return out


def budget_text(s: dict[str, Any]) -> str:
    """The budget of settings ``s`` (``epochs``, ``time_limit_s``) for people."""
    parts = [f"{s['time_limit_s']:g} s" if s["time_limit_s"] else "", f"{s['epochs']} epochs" if s["epochs"] else ""]
    return " or ".join(p for p in parts if p) or "the architecture's default epochs"


def train_overrides(s: dict[str, Any], optional: Sequence[str] = ("latent_dim", "batch_size"),
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """vae.train overrides of settings ``s``: budget, device, seed, the ``optional`` keys that are set, ``extra``."""
    out = {**budget(s["epochs"], s["time_limit_s"]), "device": s["device"], "seed": s["seed"]}
    out.update({k: s[k] for k in optional if s.get(k)})
    return {**out, **(extra or {})}


def check_training(arch: str, spec_cfg: Any, overrides: dict[str, Any], model_cfg: Any = None) -> None:
    """Let vae.train resolve the run's configs for ``spec_cfg``'s shape before any work: an unknown or bad
    override, architecture or device raises its ConfigError / TrainingError now, not after a store build."""
    from vae.train import resolve_configs

    resolve_configs(SimpleNamespace(config=spec_cfg), arch, model_cfg, **overrides)  # only .config.shape is read


def train_model(store: Path, ckpt: Path, arch: str, overrides: dict[str, Any],
                model_cfg: Any = None) -> dict[str, Any]:
    """Train from scratch into ``ckpt``; what was trained (epochs, times, device)."""
    from vae.checkpoint import load_config

    shutil.rmtree(ckpt, ignore_errors=True)
    t0 = time.perf_counter()
    with common.without_latent_stats() as vt:
        for _ in vt.train(store, ckpt, arch=arch, model_cfg=model_cfg, preview_every=0, **overrides):
            pass
    cc = load_config(ckpt / "last")
    m = cc.meta
    steps_per_epoch = max(1, math.ceil(m["n_train"] / cc.train_cfg.batch_size))
    return {"epochs": round(m["epoch"] + m["step"] / steps_per_epoch, 3), "train_time_s": m["train_time_s"],
            "wall_s": round(time.perf_counter() - t0, 1), "n_train": m["n_train"], "n_val": m["n_val"],
            "batch_size": cc.train_cfg.batch_size, "device": m["device"], "latent_dim": cc.model_cfg.latent_dim,
            "last_val_recon": m["history"][-1]["val"]["recon"] if m.get("history") else None}


# ---------------------------------------------------------------- evaluation


def evaluate_checkpoint(ckpt: str | Path, inputs: str | Path, n_iter: int, device: str, threads: int = 0,
                        with_stoi: bool | None = None) -> dict[str, Any]:
    """vae.evaluate of every file of ``inputs`` (a file or folder) with Griffin-Lim ``n_iter`` iterations."""
    import torch

    from vae.checkpoint import load_checkpoint
    from vae.evaluate import evaluate
    from vae.train import pick_device

    if threads:
        torch.set_num_threads(threads)
    ck = load_checkpoint(ckpt, pick_device(device))
    return evaluate(ck, inputs, split="all", phase="griffinlim", n_iter=n_iter, with_stoi=with_stoi)


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are numbers (None when there are none)."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return round(sum(xs) / len(xs), 5) if xs else None


def table_and_targets(heads: Sequence[str], rows: Sequence[Sequence[Any]], meets: dict[str, bool | None],
                      goals: dict[str, str], over: str) -> str:
    """The results table, then which of the issue's targets (``goals``: text by key of ``meets``) are met."""
    said = {k: "n/a" if v is None else ("met" if v else "not met") for k, v in meets.items()}
    return (common.md_table(heads, rows) + "\nTargets (issue #11): "
            + "; ".join(f"{text}: {said[k]}" for k, text in goals.items()) + f" (over {over}).\n")


# ---------------------------------------------------------------- resumable runs


def previous(path: Path, settings: dict[str, Any], force: bool, key: str, machine_only: Sequence[str] = (),
             settings_before: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The per-fold results (``key``) already in the results file ``path`` for the same settings.

    Settings named in ``machine_only`` may differ; ``settings_before``: the values of settings added since a
    results file was written, as its runs had them. Results for other settings are refused (ValueError) unless
    ``force``, which drops them.
    """
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    old_params = {**(settings_before or {}), **old.get("params", {})}
    if {k: v for k, v in old_params.items() if k not in machine_only} != \
            {k: v for k, v in settings.items() if k not in machine_only}:
        if force:
            return {}
        raise ValueError(f"{path} holds results for other settings ({old.get('params')}); use --force to "
                         "replace them, or --out to write elsewhere")
    return old.get(key, {})


def save_folds(res: dict[str, Any], out_dir: Path, name: str, key: str,
               summarise: Callable[[dict[str, Any]], dict[str, Any]],
               markdown: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """Write the results so far (a finished copy of ``res``, which keeps running) with their summary."""
    done = common.finish({**res, key: dict(sorted(res[key].items()))})
    done["summary"] = summarise(done[key])
    return common.write_result(out_dir, name, done, markdown(done))


def run_folds(name: str, key: str, out: Path, settings: dict[str, Any], *, quick: bool, chosen: Sequence[str],
              known: Sequence[str], force: bool, work: str | Path | None,
              one_fold: Callable[[str, Path], dict[str, Any]], save: Callable[[dict[str, Any], Path], dict[str, Any]],
              machine_only: Sequence[str] = (), settings_before: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``one_fold(held_out, work / held_out)`` for each of ``chosen``, saving after each.

    Folds whose result ``<out>/<name>.json`` already holds for the same settings are skipped, and kept in the
    new results (those of folds in ``known``); ``force`` redoes the chosen ones.
    """
    res = common.begin(name, quick, **settings)
    path = out / f"{name}.json"
    res[key] = {k: v for k, v in previous(path, settings, force, key, machine_only, settings_before).items()
                if k in known and not (force and k in chosen)}
    with work_folder(work, f"{name}_") as w:
        for i, fold in enumerate(chosen, 1):
            if fold in res[key]:
                say(name, f"{fold} ({i}/{len(chosen)}): result already in {path}; skipped (--force redoes)")
                continue
            say(name, f"{fold} ({i}/{len(chosen)}): held out")
            res[key][fold] = one_fold(fold, w / fold)
            save(res, out)
    return save(res, out)


# ---------------------------------------------------------------- command line


def parser(description: str, fold: str, quick: str, data: str) -> argparse.ArgumentParser:
    """A command line with the options every hold-out benchmark has; ``fold``: what one fold holds out,
    ``quick``: what --quick does, ``data``: what the shared data folder holds (for the help)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {quick}; writes to benchmarks/results/tmp/quick unless --out")
    p.add_argument("--data", default=str(common.DEFAULT_DATA), help=f"shared data folder with {data}")
    p.add_argument("--out", help="results folder (default benchmarks/results)")
    p.add_argument("--epochs", type=int, help=f"training epochs per {fold}")
    p.add_argument("--time-limit", type=float, help=f"training seconds per {fold} (optimisation steps)")
    p.add_argument("--latent-dim", type=int, help="latent size (default: the architecture's)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the architecture's)")
    p.add_argument("--griffinlim-iters", type=int, default=64, help="Griffin-Lim iterations for evaluation")
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda, mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="keep stores and checkpoints in this folder (default: a temporary one)")
    p.add_argument("--force", action="store_true", help=f"redo {fold}s whose result is already in the output")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    return p


def main(prog: str, threads: int | None, go: Callable[[], dict[str, Any]],
         markdown: Callable[[dict[str, Any]], str]) -> int:
    """Run ``go`` with ``threads`` torch threads and print its report; a user error: its message and 2."""
    from preprocessing.errors import UserError

    common.set_threads(threads)
    try:
        res = go()
    except (ValueError, UserError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(markdown(res))
    return 0
