"""Held-out music: leave-one-recording-out reconstruction quality on the shared music tracks (issue #11).

For each track of ``<data>/music/<genre>/<file>`` (held out in turn; ``--tracks`` names some by file stem):
build a store from the OTHER tracks (a folder of symbolic links in the same ``<genre>/<file>`` layout, so
the clips keep their genre labels; nothing is copied) with the architecture's spectrogram preset (``music``;
``study-music`` for ``--arch study``; ``music`` for any other architecture), plus the files of every ``--extra``
folder (``<style>/<file>``, e.g. the rendered music21 corpus of scripts/make_music_corpus.py), train from
scratch with a budget (``--epochs`` and/or ``--time-limit`` seconds of training), then evaluate the final
weights (``last``: no selection on test data) with vae.evaluate: log-spectral distance (LSD, dB) and spectral
convergence (SC) of the whole track reconstructed window by window and resynthesised with Griffin-Lim
(``--griffinlim-iters``, 64), against the original. Also measured, with the same weights: one of the fold's own
training tracks (the first other track in the store's train split), so the table shows the generalisation gap
(ratio LSD held out / LSD own), and the held-out track's own spectrogram through Griffin-Lim alone (the
phase-only ceiling: what the model cannot beat with this phase recovery; ``--no-phase-only`` skips it).
Reported per held-out track and as the mean over tracks. Targets of the issue: mean held-out LSD <= 5 dB and
spectral convergence <= 0.35.

The store, like any store built from a folder, keeps about a tenth of its files (at least one) as its
test split, which training uses for validation only: with 6 other tracks, one of them is not trained on. The
results name the tracks trained on (``train_tracks``) and the validation ones (``val_tracks``).

    python -m benchmarks.bench_music_holdout --time-limit 90 --device auto     # from the repository root
    python -m benchmarks.bench_music_holdout --tracks vibe_ace solo_trumpet --time-limit 60 --work /tmp/mh
    python -m benchmarks.bench_music_holdout --arch temporal --set spectral_weight=1.0 --set augment=true
    python -m benchmarks.bench_music_holdout --extra data/corpus/music21 --time-limit 300
    python -m benchmarks.bench_music_holdout --quick                            # smoke run (small, fast)

``--set KEY=VALUE`` (repeatable) passes any other training parameter of vae.config.TrainConfig, the value read
as JSON (``1e-3``, ``true``; anything else as a string); an unknown one stops the run before any work (exit 2).
Writes benchmarks/results/music_holdout.{json,md} (``--quick``: benchmarks/results/tmp/quick unless ``--out``)
after every track, so an interrupted run resumes: tracks whose result is already there (for the same settings)
are skipped unless ``--force``. Stores and checkpoints go to a temporary folder, or to ``--work DIR`` to keep
them (a kept store is reused). ``--quick``: 3 s of training unless a budget is given, the 2 shortest tracks held
out unless ``--tracks``. Not in run_all's default list: it is long.

Cost per held-out track, measured on 2 CPU cores shared with other jobs (default architecture,
``--time-limit 90``): 2-3 minutes: store 2-3 s (6 tracks, ~6.5 min of audio), training 90 s of steps (2-6 epochs
of 110-150 clips) plus ~5 s of setup and saving, evaluation 8-80 s (Griffin-Lim over the held-out track, its
phase-only ceiling and the own track: 0.1-0.4 s per second of audio, depending on the load). All 7 tracks: 16.4
minutes, peak memory 3.4 GB. That run (2026-12-04) gave the first figures: mean held-out LSD 22.06 dB and SC
0.972 (own track 21.18 dB / 0.980; phase-only ceiling 3.37 dB / 0.112; solo_trumpet's ceiling alone is
6.19 dB): 2-6 epochs on a CPU leave the model far from converged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import common, holdout

NAME = "music_holdout"
KEY = "tracks"  # the per-fold results in the JSON
ARCH_PRESETS = {"default": "music", "study": "study-music"}  # each architecture's own spectrogram preset
FALLBACK_PRESET = "music"  # for every other architecture (e.g. temporal)
TARGET_LSD, TARGET_SC = 5.0, 0.35
METRICS = ("lsd_db", "spectral_convergence")
QUICK = {"time_limit_s": 3.0, "n_tracks": 2}  # --quick defaults
QUICK_OUT = common.DEFAULT_OUT / "tmp" / "quick"
MACHINE_ONLY = ("device",)  # settings that may change between the runs of one results file


def log(msg: str) -> None:
    holdout.say(NAME, msg)


# ---------------------------------------------------------------- tracks and folders


def class_files(folder: str | Path) -> list[Path]:
    """The audio files of ``folder`` in the class-folder layout ``<class>/<file>``, sorted."""
    from preprocessing.audio import is_audio_path

    return sorted(f for f in Path(folder).glob("*/*") if f.is_file() and is_audio_path(f)
                  and not f.name.startswith(".") and not f.parent.name.startswith("."))


def find_tracks(folder: str | Path) -> dict[str, Path]:
    """The tracks of ``folder`` (``<genre>/<file>``) by file stem; ValueError when fewer than 2 or stems repeat."""
    files = class_files(folder)
    found: dict[str, Path] = {}
    for f in files:
        if f.stem in found:
            raise ValueError(f"two tracks named {f.stem!r} ({found[f.stem]} and {f}): --tracks cannot tell them apart")
        found[f.stem] = f
    if len(found) < 2:
        raise ValueError(f"{folder} has {len(found)} track(s) in <genre>/<file> folders; "
                         "leaving one out needs at least 2")
    return found


def duration_s(path: Path) -> float:
    import soundfile as sf

    return round(float(sf.info(str(path)).duration), 2)


def choose_tracks(found: dict[str, Path], wanted: Sequence[str] | None, folder: str | Path,
                  quick: bool = False) -> list[str]:
    """The held-out tracks to run: ``wanted`` (file stems), else all (``quick``: the shortest few)."""
    wanted = [w.strip() for w in wanted or [] if w.strip()]
    unknown = [w for w in wanted if w not in found]
    if unknown:
        raise ValueError(f"unknown track(s) {', '.join(map(repr, unknown))}: {folder} has {', '.join(sorted(found))}")
    if wanted:
        return list(dict.fromkeys(wanted))
    if quick:
        return sorted(sorted(found, key=lambda t: (duration_s(found[t]), t))[:QUICK["n_tracks"]])
    return sorted(found)


def extra_files(folders: Sequence[str | Path]) -> list[Path]:
    """The audio files of the ``--extra`` folders (``<style>/<file>``); ValueError for a folder without any."""
    out: list[Path] = []
    for d in folders:
        files = class_files(d)
        if not files:
            raise ValueError(f"--extra {d}: no audio files in <style>/<file> folders")
        out += files
    return out


def preset_for(arch: str) -> str:
    """The spectrogram preset the architecture is trained with here."""
    return ARCH_PRESETS.get(arch, FALLBACK_PRESET)


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> training overrides, each value read as JSON (else kept as a string)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. spectral_weight=1.0")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def store_splits(store: Path, tracks: dict[str, Path]) -> dict[str, str]:
    """The store's split ("train"/"test") of each real track in it, by stem."""
    from preprocessing.store import Store

    stems = {rel.as_posix(): f.stem for rel, f in holdout.class_names(list(tracks.values())).items()}
    return {stems[c["source"]]: c["split"] for c in Store(store).clips if c["source"] in stems}


# ---------------------------------------------------------------- train and evaluate


def _overrides(s: dict[str, Any]) -> dict[str, Any]:
    return holdout.train_overrides(s, extra=s["set"])


def measure(ckpt: Path, track: Path, s: dict[str, Any]) -> dict[str, Any]:
    """LSD and spectral convergence of the whole track through the model and Griffin-Lim."""
    t0 = time.perf_counter()
    r = holdout.evaluate_checkpoint(ckpt, track, s["griffinlim_iters"], s["device"], with_stoi=False)
    return {**{k: r[k] for k in METRICS}, "n_windows": r["n_windows"], "eval_s": round(time.perf_counter() - t0, 1)}


def phase_only(ckpt: Path, track: Path, n_iter: int) -> dict[str, Any]:
    """The ceiling: the track's own spectrogram (as the model sees it) through Griffin-Lim alone, measured as
    vae.evaluate measures a reconstruction."""
    import torch

    from preprocessing.audio import load_audio
    from vae import metrics
    from vae.checkpoint import load_checkpoint
    from vae.generate import analyse, to_wave

    t0 = time.perf_counter()
    ck = load_checkpoint(ckpt)  # for its spectrogram settings (the store's reference level)
    sr = ck.spec.sample_rate
    ref = load_audio(track, metrics.EVAL_SR, min_samples=1)
    with torch.random.fork_rng():  # Griffin-Lim starts from random phase: seeded as vae.evaluate seeds it
        torch.manual_seed(0)
        a = analyse(ck, load_audio(track, sr, min_samples=ck.spec.n_fft))
        est = metrics.resample(to_wave(ck, a.specs, a.ranges, "griffinlim", n_iter)[: a.length] / a.gain,
                               sr, metrics.EVAL_SR)
    return {"lsd_db": round(metrics.log_spectral_distance(ref, est, metrics.EVAL_SR), 5),
            "spectral_convergence": round(metrics.spectral_convergence(ref, est, metrics.EVAL_SR), 5),
            "n_windows": len(a.specs), "eval_s": round(time.perf_counter() - t0, 1)}


def one_track(held_out: str, tracks: dict[str, Path], extra: Sequence[Path], work: Path, cfg: Any,
              s: dict[str, Any], model_cfg: Any = None) -> dict[str, Any]:
    """Store, training and the evaluations for one held-out track (see the module docstring)."""
    from preprocessing.store import build_store

    others = [t for t in sorted(tracks) if t != held_out]
    files = [tracks[t] for t in others] + list(extra)
    log(f"{held_out}: store from {len(others)} tracks" + (f" and {len(extra)} extra files" if extra else "") + " ...")
    t0 = time.perf_counter()
    summary = build_store(holdout.links(files, work / "train_clips", keep_parent=True), work / "store", cfg)
    store_s = round(time.perf_counter() - t0, 1)
    splits = store_splits(work / "store", tracks)
    trained_on = [t for t in others if splits.get(t) == "train"]
    log(f"{held_out}: training {s['arch']} ({holdout.budget_text(s)}) on {summary.n_clips} clips ...")
    trained = holdout.train_model(work / "store", work / "ckpt", s["arch"], _overrides(s), model_cfg)
    ckpt = work / "ckpt" / "last"
    log(f"{held_out}: evaluating the held-out track ({duration_s(tracks[held_out]):g} s) ...")
    held = measure(ckpt, tracks[held_out], s)
    ceiling = phase_only(ckpt, tracks[held_out], s["griffinlim_iters"]) if s["phase_only"] else None
    own = None
    if trained_on:
        log(f"{held_out}: evaluating the training track {trained_on[0]} ({duration_s(tracks[trained_on[0]]):g} s) ...")
        own = {"track": trained_on[0], **measure(ckpt, tracks[trained_on[0]], s)}
    ratio = held["lsd_db"] / own["lsd_db"] if own and held["lsd_db"] and own["lsd_db"] else None
    log(f"{held_out}: LSD held out {common.fmt(held['lsd_db'], 2)} / own {common.fmt(own and own['lsd_db'], 2)} dB, "
        f"SC held out {common.fmt(held['spectral_convergence'], 3)}")
    return {"genre": tracks[held_out].parent.name, "file": tracks[held_out].name,
            "duration_s": duration_s(tracks[held_out]), "train_tracks": trained_on,
            "val_tracks": [t for t in others if splits.get(t) == "test"], "extra_files": len(extra),
            "store_clips": summary.n_clips, "store_s": store_s, "train": trained, "held_out": held,
            "phase_only": ceiling, "own": own, "lsd_ratio": round(ratio, 4) if ratio is not None else None,
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


# ---------------------------------------------------------------- summary and report


def summarise(tracks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means over the held-out tracks, and whether they meet the issue's targets."""
    rs = list(tracks.values())
    means = {part: {k: holdout.mean([(r.get(part) or {}).get(k) for r in rs]) for k in METRICS}
             for part in ("held_out", "own", "phase_only")}
    lsd, sc = means["held_out"]["lsd_db"], means["held_out"]["spectral_convergence"]
    return {"n_tracks": len(rs), "mean": {**means, "lsd_ratio": holdout.mean([r["lsd_ratio"] for r in rs])},
            "targets": {"lsd_db_max": TARGET_LSD, "spectral_convergence_max": TARGET_SC},
            "meets": {"lsd_db": None if lsd is None else lsd <= TARGET_LSD,
                      "spectral_convergence": None if sc is None else sc <= TARGET_SC}}


def _row(name: str, r: dict[str, Any], extra: Sequence[Any]) -> list[Any]:
    f, h, o, p = common.fmt, r["held_out"], r.get("own") or {}, r.get("phase_only") or {}
    return [name, *extra, f(h["lsd_db"], 2), f(h["spectral_convergence"], 3), f(o.get("lsd_db"), 2),
            f(o.get("spectral_convergence"), 3), f(r["lsd_ratio"], 3), f(p.get("lsd_db"), 2),
            f(p.get("spectral_convergence"), 3)]


def markdown(res: dict[str, Any]) -> str:
    s, p, f = res["summary"], res["params"], common.fmt
    sets = ", ".join(f"{k}={json.dumps(v)}" for k, v in p["set"].items())
    extra = "; ".join(f"{e['folder']} ({e['files']} files)" for e in p["extra"])
    text = common.header_md(res, "Held-out music (leave one recording out)") + (
        f"For each held-out track, the `{p['arch']}` architecture trained on the other tracks (preset {p['preset']}, "
        f"budget: {holdout.budget_text(p)}" + (f", {sets}" if sets else "") + ")" +
        (f" plus the extra folders {extra}" if extra else "") +
        f", then reconstructed the whole held-out track and one of its training tracks (own), resynthesised with "
        f"Griffin-Lim {p['griffinlim_iters']} iterations; phase-only: the held-out track's own spectrogram through "
        "Griffin-Lim alone (the ceiling). LSD (dB) and spectral convergence (SC): lower is better. Ratio: LSD held "
        "out / LSD own. The mean row averages the per-track values. Validation: the other tracks in the store's "
        "test split (not trained on).\n\n")
    heads = ["held out", "s", "epochs", "train s", "device", "own track", "validation", "LSD held out", "SC held out",
             "LSD own", "SC own", "LSD ratio", "LSD phase-only", "SC phase-only"]
    rows = [_row(k, r, [f(r["duration_s"], 0), f(r["train"]["epochs"], 2), f(r["train"]["train_time_s"], 0),
                        r["train"]["device"], (r.get("own") or {}).get("track", "n/a"),
                        ", ".join(r["val_tracks"]) or "-"]) for k, r in sorted(res[KEY].items())]
    if s["n_tracks"]:
        m = s["mean"]
        rows.append(_row("**mean**", {"held_out": m["held_out"], "own": m["own"], "phase_only": m["phase_only"],
                                      "lsd_ratio": m["lsd_ratio"]}, [""] * 6))
    goals = {"lsd_db": f"mean held-out LSD <= {TARGET_LSD:g} dB",
             "spectral_convergence": f"spectral convergence <= {TARGET_SC:g}"}
    return text + holdout.table_and_targets(heads, rows, s["meets"], goals, f"{s['n_tracks']} track(s)")


def save(res: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Write the results so far (a finished copy of ``res``, which keeps running)."""
    return holdout.save_folds(res, out_dir, NAME, KEY, summarise, markdown)


# ---------------------------------------------------------------- the run


def run(music: str | Path, out_dir: str | Path, *, quick: bool = False, tracks: Sequence[str] | None = None,
        arch: str = "default", preset_name: str | None = None, epochs: int | None = None,
        time_limit_s: float | None = None, latent_dim: int | None = None, batch_size: int | None = None,
        sets: dict[str, Any] | None = None, extra: Sequence[str | Path] = (), griffinlim_iters: int = 64,
        with_phase_only: bool = True, device: str = "auto", seed: int = 0, work: str | Path | None = None,
        force: bool = False, spec_cfg: Any = None, model_cfg: Any = None) -> dict[str, Any]:
    """Leave each of ``tracks`` (default: all found in ``music``) out in turn; write music_holdout.*.

    ``sets``: further training overrides (TrainConfig fields); ``extra``: folders of ``<style>/<file>`` audio
    added to every fold's training store; ``spec_cfg`` / ``model_cfg``: a SpectrogramConfig / ModelConfig instead
    of the preset's (tests).
    """
    from preprocessing.config import preset

    found = find_tracks(music)
    chosen = choose_tracks(found, tracks, music, quick)
    more = extra_files(extra)
    holdout.class_names([*found.values(), *more])  # two files that would share a link: refused now, not later
    preset_name = preset_name or preset_for(arch)
    cfg = spec_cfg or preset(preset_name)
    if quick and not (epochs or time_limit_s):
        time_limit_s = QUICK["time_limit_s"]
    settings = {"music": str(Path(music).resolve()), "arch": arch,
                "preset": preset_name if spec_cfg is None else "custom", "spectrogram": cfg.to_dict(),
                "custom_model": model_cfg.to_dict() if model_cfg is not None else None,
                "epochs": epochs, "time_limit_s": time_limit_s, "latent_dim": latent_dim, "batch_size": batch_size,
                "set": dict(sorted((sets or {}).items())),
                "extra": [{"folder": str(Path(d).resolve()), "files": len(class_files(d))} for d in extra],
                "griffinlim_iters": griffinlim_iters, "phase_only": bool(with_phase_only), "seed": seed,
                "device": device}
    settings = json.loads(json.dumps(settings))  # as the results file will hold them (lists, not tuples)
    holdout.check_training(arch, cfg, _overrides(settings), model_cfg)
    return holdout.run_folds(
        NAME, KEY, Path(out_dir), settings, quick=quick, chosen=chosen, known=list(found), force=force, work=work,
        one_fold=lambda t, w: one_track(t, found, more, w, cfg, settings, model_cfg), save=save,
        machine_only=MACHINE_ONLY)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = holdout.parser(__doc__, "track", f"{QUICK['time_limit_s']:g} s of training unless a budget is given, the "
                       f"{QUICK['n_tracks']} shortest tracks held out unless --tracks", "music/<genre>/")
    p.add_argument("--music", help="music folder, <genre>/<file> (default <data>/music)")
    p.add_argument("--tracks", nargs="+", metavar="NAME", help="held-out tracks by file stem (default: every track)")
    p.add_argument("--arch", default="default", help="architecture (vae.config.ARCHS: default, study, temporal, ...)")
    p.add_argument("--preset", help="spectrogram preset (default: music; study-music for --arch study)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="another training parameter (vae.config.TrainConfig), the value as JSON; repeatable")
    p.add_argument("--extra", action="append", default=[], metavar="DIR",
                   help="a folder of <style>/<file> audio added to every training store; repeatable")
    p.add_argument("--no-phase-only", action="store_true", help="skip the phase-only ceiling (one Griffin-Lim less)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    return holdout.main("bench_music_holdout", a.threads, lambda: run(
        a.music or common.music_dir(a.data), a.out or (QUICK_OUT if a.quick else common.DEFAULT_OUT), quick=a.quick,
        tracks=a.tracks, arch=a.arch, preset_name=a.preset, epochs=a.epochs, time_limit_s=a.time_limit,
        latent_dim=a.latent_dim, batch_size=a.batch_size, sets=parse_sets(a.sets), extra=a.extra,
        griffinlim_iters=a.griffinlim_iters, with_phase_only=not a.no_phase_only, device=a.device, seed=a.seed,
        work=a.work, force=a.force), markdown)


if __name__ == "__main__":
    sys.exit(main())
